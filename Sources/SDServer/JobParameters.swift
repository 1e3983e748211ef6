import SDFormat
import SDPipeline
import SDSchedulers

/// A request the API refuses, with the HTTP status and the field at fault.
public struct APIError: Error, Equatable, CustomStringConvertible {
    public let status: Int
    public let message: String
    public let field: String?

    public init(_ status: Int, _ message: String, field: String? = nil) {
        self.status = status
        self.message = message
        self.field = field
    }

    /// 422: a value of the right kind but out of range, or of the wrong type.
    static func invalid(_ field: String, _ message: String) -> APIError { APIError(422, "\(field): \(message)", field: field) }

    public var description: String { message }
}

/// The settings of one API call, checked, before they become pipeline requests.
public struct JobParameters: Equatable, Sendable {
    public var prompt = ""
    public var negativePrompt = ""
    public var steps = 20
    public var cfgScale: Float = 7
    public var width = 512
    public var height = 512
    /// nil: a random seed.
    public var seed: UInt64?
    public var scheduler: SchedulerKind = .eulerAncestral
    public var batchSize = 1
    public var iterations = 1

    public init() {}

    // Limits a board can serve: every number that sizes work or memory is bounded here,
    // before anything is allocated from it.
    public static let maxSteps = 150
    public static let minSide = 64
    public static let maxSide = 2048
    public static let maxBatchSize = 8
    public static let maxIterations = 16
    public static let maxPromptCharacters = 4000
    /// The largest seed: JSON numbers are doubles, exact up to 2^53.
    public static let maxSeed: UInt64 = (1 << 53) - 1

    public var imageCount: Int { batchSize * iterations }

    /// One pipeline run per iteration, `batchSize` images each; image k of the job gets seed
    /// `seed + k` (A1111's all_seeds), whichever run makes it.
    public func runs(seed base: UInt64) -> [GenerationRequest] {
        (0..<iterations).map { iteration in
            var r = GenerationRequest(prompts: [prompt], negativePrompts: negativePrompt.isEmpty ? [] : [negativePrompt])
            r.steps = steps
            r.guidanceScale = cfgScale
            r.width = width
            r.height = height
            r.imagesPerPrompt = batchSize
            r.seedMode = .perImage
            r.scheduler = scheduler
            r.seed = base &+ UInt64(iteration * batchSize)
            return r
        }
    }

    /// AUTOMATIC1111's sampler names (and their k-diffusion aliases, and the CLI's names)
    /// for each scheduler. PLMS is diffusers' PNDM without Runge-Kutta warm-up steps, which
    /// is how Stable Diffusion's PNDM config runs it.
    public static let samplers: [(name: String, aliases: [String], kind: SchedulerKind)] = [
        ("Euler a", ["k_euler_a", "k_euler_ancestral", "euler-a"], .eulerAncestral),
        ("Euler", ["k_euler", "euler"], .euler),
        ("LMS", ["k_lms", "lms"], .lms),
        ("DDIM", ["ddim"], .ddim),
        ("PLMS", ["plms", "pndm", "PNDM"], .pndm),
        ("DPM++ 2M", ["k_dpmpp_2m", "dpm++2m"], .dpmpp2m),
        ("DPM++ 2M Karras", ["k_dpmpp_2m_ka", "dpm++2m-karras"], .dpmpp2mKarras),
        ("LCM", ["lcm"], .lcm),
    ]

    /// The scheduler for an A1111 sampler name, with A1111 1.9's separate `scheduler`
    /// field ("Karras") folded in.
    static func scheduler(named name: String, schedule: String?) -> SchedulerKind? {
        let lower = name.lowercased()
        guard let entry = samplers.first(where: { sampler in
            sampler.name.lowercased() == lower || sampler.aliases.contains { alias in alias.lowercased() == lower }
        })
        else { return nil }
        if entry.kind == .dpmpp2m, schedule?.lowercased() == "karras" { return .dpmpp2mKarras }
        return entry.kind
    }

    /// Checks the ranges shared by both APIs; `countField` names the image-count field.
    func validate(countField: String = "batch_size") throws {
        if prompt.count > Self.maxPromptCharacters {
            throw APIError.invalid("prompt", "at most \(Self.maxPromptCharacters) characters (got \(prompt.count))")
        }
        if negativePrompt.count > Self.maxPromptCharacters {
            throw APIError.invalid("negative_prompt", "at most \(Self.maxPromptCharacters) characters (got \(negativePrompt.count))")
        }
        for (field, v) in [("width", width), ("height", height)] {
            guard v >= Self.minSide, v <= Self.maxSide, v % 8 == 0 else {
                throw APIError.invalid(field, "must be a multiple of 8 from \(Self.minSide) to \(Self.maxSide) (got \(v))")
            }
        }
        guard steps >= 1, steps <= Self.maxSteps else { throw APIError.invalid("steps", "must be from 1 to \(Self.maxSteps) (got \(steps))") }
        guard cfgScale.isFinite, cfgScale >= 0, cfgScale <= 30 else {
            throw APIError.invalid("cfg_scale", "must be from 0 to 30 (got \(cfgScale))")
        }
        guard batchSize >= 1, batchSize <= Self.maxBatchSize else {
            throw APIError.invalid(countField, "must be from 1 to \(Self.maxBatchSize) (got \(batchSize))")
        }
        guard iterations >= 1, iterations <= Self.maxIterations else {
            throw APIError.invalid("n_iter", "must be from 1 to \(Self.maxIterations) (got \(iterations))")
        }
    }
}

/// Typed reads of a JSON object's fields: absent or null gives nil (the default applies);
/// a value of the wrong kind is a 422 naming the field. Unknown fields are ignored, as
/// A1111 and OpenAI do.
struct FieldReader {
    let object: [(String, JSON)]

    init(body: [UInt8]) throws {
        let json: JSON
        do {
            json = try JSON(parsing: body)
        } catch {
            throw APIError(400, "the body is not valid JSON: \(error)")
        }
        guard let object = json.object else { throw APIError(400, "the body must be a JSON object") }
        self.object = object
    }

    private func value(_ field: String) -> JSON? {
        guard let v = object.last(where: { $0.0 == field })?.1, !v.isNull else { return nil }
        return v
    }

    func string(_ field: String) throws -> String? {
        guard let v = value(field) else { return nil }
        guard let s = v.string else { throw APIError.invalid(field, "must be a string") }
        return s
    }

    /// An integer; `range` is checked before the value is used.
    func int(_ field: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let v = value(field) else { return nil }
        guard let n = v.double else { throw APIError.invalid(field, "must be a number") }
        guard let i = v.int else { throw APIError.invalid(field, "must be an integer (got \(n))") }
        guard range.contains(i) else { throw APIError.invalid(field, "must be from \(range.lowerBound) to \(range.upperBound) (got \(i))") }
        return i
    }

    /// A list of strings (img2img's `init_images`).
    func strings(_ field: String) throws -> [String]? {
        guard let v = value(field) else { return nil }
        let strings = v.array?.compactMap(\.string)
        guard let strings, strings.count == v.array?.count else { throw APIError.invalid(field, "must be a list of strings") }
        return strings
    }

    func number(_ field: String) throws -> Double? {
        guard let v = value(field) else { return nil }
        guard let n = v.double else { throw APIError.invalid(field, "must be a number") }
        return n
    }

    /// A seed: -1 (or absent) is random.
    func seed(_ field: String) throws -> UInt64?? {
        guard let s = try int(field, in: -1...Int(JobParameters.maxSeed)) else { return .none }
        return .some(s < 0 ? nil : UInt64(s))
    }
}

/// A count as an Int that cannot overflow the limits' arithmetic: huge values are kept
/// huge (and refused by `validate`) without trapping.
let anyCount = Int.min / 2...Int.max / 2

extension JobParameters {
    /// `POST /sdapi/v1/txt2img`'s body.
    public static func automatic1111(body: [UInt8]) throws -> JobParameters {
        let p = try automatic1111(fields: FieldReader(body: body))
        try p.validate()
        return p
    }

    /// txt2img's fields, not yet validated (img2img adds its own and its default size).
    static func automatic1111(fields f: FieldReader) throws -> JobParameters {
        var p = JobParameters()
        guard let prompt = try f.string("prompt"), !prompt.isEmpty else { throw APIError.invalid("prompt", "is required") }
        p.prompt = prompt
        p.negativePrompt = try f.string("negative_prompt") ?? ""
        p.steps = try f.int("steps", in: anyCount) ?? p.steps
        if let cfg = try f.number("cfg_scale") { p.cfgScale = Float(cfg) }
        p.width = try f.int("width", in: anyCount) ?? p.width
        p.height = try f.int("height", in: anyCount) ?? p.height
        if let seed = try f.seed("seed") { p.seed = seed }
        let samplerName = try f.string("sampler_name")
        if let name = try samplerName ?? f.string("sampler_index") {
            guard let kind = scheduler(named: name, schedule: try f.string("scheduler")) else {
                throw APIError.invalid("sampler_name", "unknown sampler \"\(name)\"; choose one of \(samplers.map(\.name).joined(separator: ", "))")
            }
            p.scheduler = kind
        }
        p.batchSize = try f.int("batch_size", in: anyCount) ?? 1
        p.iterations = try f.int("n_iter", in: anyCount) ?? 1
        return p
    }

    /// `POST /v1/images/generations`'s body; also returns whether the client asked for URLs.
    public static func openAI(body: [UInt8]) throws -> (JobParameters, wantsURL: Bool) {
        let f = try FieldReader(body: body)
        var p = JobParameters()
        guard let prompt = try f.string("prompt"), !prompt.isEmpty else { throw APIError.invalid("prompt", "is required") }
        p.prompt = prompt
        p.batchSize = try f.int("n", in: anyCount) ?? 1
        if let size = try f.string("size") {
            let parts = size.lowercased().split(separator: "x", omittingEmptySubsequences: false)
            guard parts.count == 2, parts.allSatisfy({ $0.count <= 5 }), let w = Int(parts[0]), let h = Int(parts[1]) else {
                throw APIError.invalid("size", "must look like 512x512 (got \"\(size.prefix(40))\")")
            }
            (p.width, p.height) = (w, h)
        }
        let format = try f.string("response_format") ?? "b64_json"
        guard format == "b64_json" || format == "url" else {
            throw APIError.invalid("response_format", "must be b64_json or url (got \"\(format.prefix(40))\")")
        }
        // Extensions some clients send; OpenAI itself has no such knobs.
        p.negativePrompt = try f.string("negative_prompt") ?? ""
        p.steps = try f.int("steps", in: anyCount) ?? p.steps
        if let cfg = try f.number("cfg_scale") { p.cfgScale = Float(cfg) }
        if let seed = try f.seed("seed") { p.seed = seed }
        try p.validate(countField: "n")
        return (p, format == "url")
    }
}
