import Foundation
import SDConverter
import SDFormat
import SDPipeline
@testable import SDServer
import XCTest

/// Holds the pipeline at a step until opened, still answering cancellation, so tests can
/// keep a job running (or waiting) for as long as they need.
final class Gate: @unchecked Sendable {
    private let lock = NSLock()
    private var closed = false
    var isClosed: Bool { lock.locked { closed } }
    func close() { lock.locked { closed = true } }
    func open() { lock.locked { closed = false } }
}

/// A `PocketServer` on an ephemeral loopback port, in this process, serving the tiny model.
final class RunningServer {
    let server: PocketServer
    let port: Int
    private let task: Task<Void, Error>
    var client: HTTPTestClient { HTTPTestClient(port: port) }

    init(_ configure: (inout ServerConfiguration) -> Void = { _ in }, gate: Gate = Gate(),
         renderPreview: GenerationQueue.RenderPreview? = nil) throws {
        var configuration = ServerConfiguration()
        configuration.port = 0
        configuration.modelName = "tiny"
        configuration.modelPath = ServerTests.model
        configure(&configuration)
        let pipeline = try ServerTests.pipeline()
        let server = PocketServer(configuration: configuration, generate: { request, progress in
            try pipeline.generate(request) { p in
                while gate.isClosed && p.phase == .denoising {
                    if !progress(p) { return false }
                    usleep(2000)
                }
                return progress(p)
            }.images
        }, renderPreview: renderPreview)
        let ready = DispatchSemaphore(value: 0)
        let box = PortBox()
        task = Task { try await server.run(handleSignals: false) { port in box.port = port; ready.signal() } }
        guard ready.wait(timeout: .now() + 60) == .success else { throw APIError(500, "the server did not start") }
        self.server = server
        self.port = box.port
    }

    /// Stops serving and waits for the worker, so the next test's server has the shared
    /// pipeline to itself.
    func stop() {
        task.cancel()
        server.queue.shutdown()
        server.queue.waitUntilIdle()
    }

    final class PortBox: @unchecked Sendable { var port = 0 }
}

final class ServerTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures").path
    static let scratch = NSTemporaryDirectory() + "pocketsd-server-tests-\(getpid())"
    /// Named like the server's model, so the CLI writes the same `Model:` in its PNGs.
    static var model: String { scratch + "/tiny.pdm" }
    private static var loaded: StableDiffusionPipeline?

    static func pipeline() throws -> StableDiffusionPipeline {
        if let loaded { return loaded }
        if !FileManager.default.fileExists(atPath: model) {
            try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
            _ = try Converter.convert(input: fixtures + "/tiny-sd-a", output: model, options: ConversionOptions(weights: .fp16))
        }
        let p = try StableDiffusionPipeline(modelPath: model, threads: 1)
        loaded = p
        return p
    }

    override class func tearDown() { try? FileManager.default.removeItem(atPath: scratch) }

    /// The built `pocketsd` sits beside the test bundle.
    static var cli: String {
        var dir = Bundle.main.bundleURL
        if dir.pathExtension == "xctest" { dir = dir.deletingLastPathComponent() }
        return dir.appendingPathComponent("pocketsd").path
    }

    static let pngSignature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    func decodeBase64(_ any: Any?) -> [UInt8]? {
        guard let s = any as? String, let d = Data(base64Encoded: s) else { return nil }
        return Array(d)
    }

    /// Polls `/sdapi/v1/progress` until `condition` holds (at most 30 s).
    func waitForProgress(_ s: RunningServer, _ what: String, _ condition: ([String: Any]) -> Bool) -> [String: Any]? {
        let deadline = Date(timeIntervalSinceNow: 30)
        while Date() < deadline {
            if let p = s.client.get("/sdapi/v1/progress")?.object, condition(p) { return p }
            usleep(20_000)
        }
        XCTFail("progress never showed \(what)")
        return nil
    }

    static func state(_ p: [String: Any]) -> [String: Any] { p["state"] as? [String: Any] ?? [:] }

    // MARK: txt2img

    /// The API's PNGs are byte for byte the CLI's for the same settings, seeds included.
    func testTxt2imgPNGsEqualTheCLIs() throws {
        let s = try RunningServer()
        defer { s.stop() }
        let reply = try XCTUnwrap(s.client.post("/sdapi/v1/txt2img", json: [
            "prompt": "a red apple", "negative_prompt": "blurry", "steps": 3, "cfg_scale": 7.5,
            "width": 64, "height": 64, "seed": 42, "sampler_name": "Euler a", "batch_size": 2,
            "unknown_field": ["ignored": true],
        ]))
        XCTAssertEqual(reply.status, 200, reply.text)
        let images = try XCTUnwrap(reply.object["images"] as? [String]).compactMap(decodeBase64)
        XCTAssertEqual(images.count, 2)
        let info = try XCTUnwrap((reply.object["info"] as? String).flatMap {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] })
        XCTAssertEqual(info["all_seeds"] as? [Int], [42, 43])
        XCTAssertEqual(info["seed"] as? Int, 42)
        XCTAssertEqual((reply.object["parameters"] as? [String: Any])?["sampler_name"] as? String, "Euler a")

        let out = Self.scratch + "/cli.png"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.cli)
        p.arguments = ["generate", "-m", Self.model, "-p", "a red apple", "-n", "blurry", "--steps", "3", "--guidance", "7.5",
                       "--seed", "42", "--width", "64", "--height", "64", "--scheduler", "euler-a", "--images", "2",
                       "--threads", "1", "-o", out]
        p.standardError = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        for i in 0..<2 {
            let file = try XCTUnwrap(FileManager.default.contents(atPath: Self.scratch + "/cli-\(i).png"))
            XCTAssertEqual(images[i], Array(file), "image \(i): the API's PNG differs from the CLI's")
        }
    }

    /// n_iter runs one batch after another; the seeds go on counting (A1111's all_seeds), and
    /// a random seed (-1) is reported.
    func testIterationsAndRandomSeed() throws {
        let s = try RunningServer()
        defer { s.stop() }
        let reply = try XCTUnwrap(s.client.post("/sdapi/v1/txt2img", json: [
            "prompt": "x", "steps": 1, "width": 64, "height": 64, "seed": -1, "batch_size": 1, "n_iter": 2, "sampler_name": "DDIM"]))
        XCTAssertEqual(reply.status, 200, reply.text)
        let images = try XCTUnwrap(reply.object["images"] as? [String]).compactMap(decodeBase64)
        XCTAssertEqual(images.count, 2)
        for image in images { XCTAssertEqual(Array(image.prefix(8)), Self.pngSignature) }
        let info = try XCTUnwrap((reply.object["info"] as? String).flatMap {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] })
        let seeds = try XCTUnwrap(info["all_seeds"] as? [Int])
        XCTAssertEqual(seeds.count, 2)
        XCTAssertEqual(seeds[1], seeds[0] + 1)
        XCTAssertGreaterThanOrEqual(seeds[0], 0)
        XCTAssertTrue((info["infotexts"] as? [String])?.first?.contains("Sampler: DDIM") ?? false)
    }

    // MARK: Other endpoints

    func testInformationEndpointsAndPage() throws {
        let s = try RunningServer()
        defer { s.stop() }
        let page = try XCTUnwrap(s.client.get("/"))
        XCTAssertEqual(page.status, 200)
        XCTAssertTrue(page.headers["content-type"]?.hasPrefix("text/html") ?? false)
        for fragment in ["id=\"prompt\"", "id=\"generate\"", "id=\"cancel\"", "sdapi/v1/txt2img", "sdapi/v1/progress", "name=\"viewport\""] {
            XCTAssertTrue(page.text.contains(fragment), "the page lacks \(fragment)")
        }
        XCTAssertFalse(page.text.contains("http://") || page.text.contains("https://"), "the page must not load anything from elsewhere")

        let samplers = try XCTUnwrap(s.client.get("/sdapi/v1/samplers")?.json as? [[String: Any]]).compactMap { $0["name"] as? String }
        for name in ["Euler a", "Euler", "LMS", "DDIM", "PLMS", "DPM++ 2M", "DPM++ 2M Karras"] {
            XCTAssertTrue(samplers.contains(name), name)
        }
        let models = try XCTUnwrap(s.client.get("/sdapi/v1/sd-models")?.json as? [[String: Any]])
        XCTAssertEqual(models.first?["model_name"] as? String, "tiny")
        XCTAssertEqual(s.client.get("/sdapi/v1/options")?.object["sd_model_checkpoint"] as? String, "tiny")
        XCTAssertEqual(s.client.post("/sdapi/v1/options", json: ["sd_model_checkpoint": "tiny"])?.status, 200)
        let idle = try XCTUnwrap(s.client.get("/sdapi/v1/progress")?.object)
        XCTAssertEqual(idle["progress"] as? Double, 0)
        XCTAssertTrue(idle["current_image"] is NSNull)
        XCTAssertEqual(s.client.post("/sdapi/v1/interrupt", raw: "")?.status, 200)
        XCTAssertEqual(s.client.get("/no/such/path")?.status, 404)
    }

    func testOpenAIImages() throws {
        let outputs = Self.scratch + "/outputs"
        try FileManager.default.createDirectory(atPath: outputs, withIntermediateDirectories: true)
        let s = try RunningServer { $0.outputDirectory = outputs }
        defer { s.stop() }
        let reply = try XCTUnwrap(s.client.post("/v1/images/generations", json: [
            "prompt": "a lighthouse", "n": 2, "size": "64x64", "response_format": "b64_json", "model": "dall-e-2", "steps": 2]))
        XCTAssertEqual(reply.status, 200, reply.text)
        let data = try XCTUnwrap(reply.object["data"] as? [[String: Any]])
        XCTAssertEqual(data.count, 2)
        for item in data { XCTAssertEqual(decodeBase64(item["b64_json"]).map { Array($0.prefix(8)) }, Self.pngSignature) }
        XCTAssertNotNil(reply.object["created"] as? Int)

        let urls = try XCTUnwrap(s.client.post("/v1/images/generations", json: [
            "prompt": "a lighthouse", "size": "64x64", "response_format": "url", "seed": 7, "steps": 2]))
        XCTAssertEqual(urls.status, 200, urls.text)
        let url = try XCTUnwrap((urls.object["data"] as? [[String: Any]])?.first?["url"] as? String)
        let path = try XCTUnwrap(URL(string: url)?.path)
        let file = try XCTUnwrap(s.client.get(path))
        XCTAssertEqual(file.status, 200)
        XCTAssertEqual(Array(file.body.prefix(8)), Self.pngSignature)
        XCTAssertEqual(s.client.get("/outputs/..%2Ftiny.pdm")?.status, 404)
    }

    // MARK: Bad requests

    /// Every malformed or out-of-range request gets a 4xx with a JSON message naming the
    /// field, and the server keeps serving.
    func testBadRequests() throws {
        let s = try RunningServer()
        defer { s.stop() }
        let ok: [String: Any] = ["prompt": "x", "steps": 1, "width": 64, "height": 64]
        func with(_ key: String, _ value: Any?) -> [String: Any] {
            var d = ok
            d[key] = value
            return d
        }
        let cases: [(String, Any, Int, String)] = [
            ("missing prompt", with("prompt", nil), 422, "prompt"),
            ("empty prompt", with("prompt", ""), 422, "prompt"),
            ("prompt of wrong type", with("prompt", 5), 422, "prompt"),
            ("huge prompt", with("prompt", String(repeating: "a ", count: 5000)), 422, "prompt"),
            ("width 100000", with("width", 100000), 422, "width"),
            ("width not a multiple of 8", with("width", 100), 422, "width"),
            ("negative height", with("height", -64), 422, "height"),
            ("steps 0", with("steps", 0), 422, "steps"),
            ("steps 10^6", with("steps", 1_000_000), 422, "steps"),
            ("steps 1e300", with("steps", 1e300), 422, "steps"),
            ("steps as text", with("steps", "20"), 422, "steps"),
            ("fractional steps", with("steps", 2.5), 422, "steps"),
            ("batch_size 0", with("batch_size", 0), 422, "batch_size"),
            ("batch_size 10^6", with("batch_size", 1_000_000), 422, "batch_size"),
            ("n_iter 10^6", with("n_iter", 1_000_000), 422, "n_iter"),
            ("unknown sampler", with("sampler_name", "Heun++"), 422, "sampler_name"),
            ("cfg_scale too big", with("cfg_scale", 1000), 422, "cfg_scale"),
            ("seed below -1", with("seed", -5), 422, "seed"),
        ]
        for (name, body, status, field) in cases {
            let r = try XCTUnwrap(s.client.post("/sdapi/v1/txt2img", json: body), name)
            XCTAssertEqual(r.status, status, "\(name): \(r.text)")
            XCTAssertEqual(r.object["field"] as? String, field, "\(name): \(r.text)")
            XCTAssertTrue((r.object["detail"] as? String)?.contains(field) ?? false, "\(name): \(r.text)")
        }
        for (name, raw) in [("not JSON", "{prompt: x"), ("an array", "[1, 2]"), ("empty body", ""), ("deep nesting", String(repeating: "[", count: 100_000))] {
            let r = try XCTUnwrap(s.client.post("/sdapi/v1/txt2img", raw: raw), name)
            XCTAssertTrue(r.status == 400 || r.status == 413, "\(name): \(r.status) \(r.text)")
            XCTAssertNotNil(r.object["detail"] as? String, name)
        }
        let big = "{\"prompt\": \"" + String(repeating: "a", count: 100_000) + "\"}"
        XCTAssertEqual(s.client.post("/sdapi/v1/txt2img", raw: big)?.status, 413)

        // OpenAI's error shape names the parameter.
        for (body, param) in [(["prompt": "x", "size": "big"], "size"), (["prompt": "x", "n": 0], "n"),
                              (["prompt": "x", "size": "4096x64"], "width"), (["prompt": "x", "size": "100000x64"], "size"), (["n": 1], "prompt"),
                              (["prompt": "x", "response_format": "gif"], "response_format"),
                              (["prompt": "x", "response_format": "url"], "response_format")] as [([String: Any], String)] {
            let r = try XCTUnwrap(s.client.post("/v1/images/generations", json: body))
            XCTAssertEqual(r.status, 422, r.text)
            let error = r.object["error"] as? [String: Any]
            XCTAssertEqual(error?["param"] as? String, param, r.text)
            XCTAssertEqual(error?["type"] as? String, "invalid_request_error")
        }
        XCTAssertEqual(s.client.post("/sdapi/v1/txt2img", json: ok)?.status, 200, "the server still serves")
    }

    /// A client that never finishes its body is cut off; many connections at once are served.
    func testSlowClientAndManyConnections() throws {
        let s = try RunningServer { $0.idleTimeoutSeconds = 1 }
        defer { s.stop() }
        let fd = try XCTUnwrap(s.client.connect())
        HTTPTestClient.send(fd, Array("POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"pro".utf8))
        let start = Date()
        _ = HTTPTestClient.readReply(fd)  // returns when the server closes the connection
        close(fd)
        XCTAssertLessThan(Date().timeIntervalSince(start), 20, "the server should drop a stalled body")

        let count = 64
        let statuses = UnsafeMutableBufferPointer<Int>.allocate(capacity: count)
        defer { statuses.deallocate() }
        let client = s.client
        DispatchQueue.concurrentPerform(iterations: count) { i in
            statuses[i] = client.get("/sdapi/v1/samplers")?.status ?? 0
        }
        XCTAssertEqual(Array(statuses), Array(repeating: 200, count: count))
    }

    // MARK: Queue, progress, cancel

    /// With the queue full a request gets 503 and Retry-After at once; progress shows the
    /// running job with a preview; interrupt stops it, and the waiting job then runs.
    func testQueueFullProgressAndInterrupt() throws {
        let gate = Gate()
        gate.close()
        let s = try RunningServer({ $0.queueLimit = 1 }, gate: gate)
        defer { s.stop() }
        let body: [String: Any] = ["prompt": "x", "steps": 4, "width": 64, "height": 64, "seed": 1]
        let client = s.client
        let group = DispatchGroup()
        var first: HTTPTestClient.Reply?, second: HTTPTestClient.Reply?
        DispatchQueue.global().async(group: group) { first = client.post("/sdapi/v1/txt2img", json: body) }
        let running = waitForProgress(s, "a running job with a preview") {
            (Self.state($0)["sampling_step"] as? Int ?? 0) >= 1 && $0["current_image"] is String
        }
        XCTAssertEqual(decodeBase64(running?["current_image"]).map { Array($0.prefix(8)) }, Self.pngSignature)
        XCTAssertEqual(Self.state(running ?? [:])["sampling_steps"] as? Int, 4)
        XCTAssertGreaterThan(running?["progress"] as? Double ?? 0, 0)

        DispatchQueue.global().async(group: group) { second = client.post("/sdapi/v1/txt2img", json: body) }
        _ = waitForProgress(s, "a waiting job") { (Self.state($0)["job_count"] as? Int) == 2 }
        let refused = try XCTUnwrap(client.post("/sdapi/v1/txt2img", json: body))
        XCTAssertEqual(refused.status, 503, refused.text)
        XCTAssertNotNil(refused.headers["retry-after"].flatMap(Int.init))
        let openAIRefused = try XCTUnwrap(client.post("/v1/images/generations", json: ["prompt": "x", "size": "64x64"]))
        XCTAssertEqual(openAIRefused.status, 503)
        XCTAssertEqual((openAIRefused.object["error"] as? [String: Any])?["type"] as? String, "server_error")

        XCTAssertEqual(client.post("/sdapi/v1/interrupt", raw: "")?.status, 200)
        // The second job is now the running one; let it finish.
        _ = waitForProgress(s, "the second job running") { (Self.state($0)["job_count"] as? Int) == 1 }
        gate.open()
        XCTAssertEqual(group.wait(timeout: .now() + 60), .success)
        XCTAssertEqual(first?.status, 409, first?.text ?? "no reply")
        XCTAssertEqual(second?.status, 200, second?.text ?? "no reply")
    }

    /// With a preview renderer (`pocketsd serve` passes TAESD's when the file has it), a
    /// client asking for the picture first gets the latent-size one, then the rendered one
    /// from a later step; polls with `skip_current_image` render nothing.
    func testRenderedProgressPicture() throws {
        final class Count: @unchecked Sendable {
            private let lock = NSLock()
            private var n = 0
            var value: Int { lock.locked { n } }
            func add() { lock.locked { n += 1 } }
        }
        let renders = Count()
        let gate = Gate()
        gate.close()
        let s = try RunningServer(gate: gate) { latents, shape in
            renders.add()
            XCTAssertEqual(latents.count, shape.reduce(1, *))
            return RGBImage(width: 24, height: 16, pixels: [UInt8](repeating: 200, count: 24 * 16 * 3))
        }
        defer { s.stop() }
        let client = s.client
        let group = DispatchGroup()
        var reply: HTTPTestClient.Reply?
        let body: [String: Any] = ["prompt": "x", "steps": 3, "width": 64, "height": 64, "seed": 1]
        DispatchQueue.global().async(group: group) { reply = client.post("/sdapi/v1/txt2img", json: body) }
        /// Width and height from a PNG's IHDR.
        func size(_ p: [String: Any]) -> (Int, Int)? {
            guard let png = decodeBase64(p["current_image"]), png.count > 24 else { return nil }
            func be32(_ i: Int) -> Int { png[i..<(i + 4)].reduce(0) { $0 << 8 | Int($1) } }
            return (be32(16), be32(20))
        }
        let first = waitForProgress(s, "a latent-size picture") { size($0) != nil }
        XCTAssertEqual(first.flatMap(size).map { [$0.0, $0.1] }, [32, 32], "LatentPreview's latent-size picture first (the tiny VAE scales by 2)")
        _ = waitForProgress(s, "the rendered picture") { size($0).map { [$0.0, $0.1] } == [24, 16] }
        usleep(500_000)  // The poll that saw it asked for one more; let that one be made.
        let rendered = renders.value
        XCTAssertGreaterThanOrEqual(rendered, 1)
        for _ in 0..<5 {
            XCTAssertEqual(client.get("/sdapi/v1/progress?skip_current_image=true")?.status, 200)
            usleep(50_000)
        }
        XCTAssertEqual(renders.value, rendered, "polls without a picture rendered one")
        gate.open()
        XCTAssertEqual(group.wait(timeout: .now() + 60), .success)
        XCTAssertEqual(reply?.status, 200, reply?.text ?? "no reply")
        XCTAssertTrue(try XCTUnwrap(client.get("/sdapi/v1/progress")?.object)["current_image"] is NSNull,
                      "no picture once the job is done")
    }

    /// A client that disconnects cancels its job at the next step; the server keeps serving.
    func testDisconnectCancelsTheJob() throws {
        let gate = Gate()
        gate.close()
        let s = try RunningServer({ _ in }, gate: gate)
        defer { s.stop() }
        let fd = try XCTUnwrap(s.client.connect())
        let body = Array(#"{"prompt": "x", "steps": 4, "width": 64, "height": 64}"#.utf8)
        HTTPTestClient.send(fd, HTTPTestClient.requestBytes("POST", "/sdapi/v1/txt2img", body: body))
        _ = waitForProgress(s, "the job running") { (Self.state($0)["sampling_step"] as? Int ?? 0) >= 1 }
        close(fd)
        _ = waitForProgress(s, "the job cancelled") { (Self.state($0)["job_count"] as? Int) == 0 }
        gate.open()
        XCTAssertEqual(s.client.post("/sdapi/v1/txt2img", json: ["prompt": "x", "steps": 1, "width": 64, "height": 64])?.status, 200)
    }

    // MARK: Auth

    func testAPIKey() throws {
        let s = try RunningServer { $0.apiKey = "s3cret" }
        defer { s.stop() }
        let c = s.client
        let none = try XCTUnwrap(c.get("/sdapi/v1/samplers"))
        XCTAssertEqual(none.status, 401)
        XCTAssertTrue(none.headers["www-authenticate"]?.hasPrefix("Basic") ?? false)
        XCTAssertEqual(c.get("/", headers: ["Authorization": "Bearer wrong"])?.status, 401)
        XCTAssertEqual(c.get("/", headers: ["Authorization": "Bearer s3cre"])?.status, 401)
        XCTAssertEqual(c.get("/", headers: ["Authorization": "Bearer s3cret"])?.status, 200)
        let basic = Data("user:s3cret".utf8).base64EncodedString()
        XCTAssertEqual(c.get("/sdapi/v1/options", headers: ["Authorization": "Basic \(basic)"])?.status, 200)
        let wrongBasic = Data("user:nope".utf8).base64EncodedString()
        XCTAssertEqual(c.get("/sdapi/v1/options", headers: ["Authorization": "Basic \(wrongBasic)"])?.status, 401)
        let openAI = try XCTUnwrap(c.post("/v1/images/generations", json: ["prompt": "x"]))
        XCTAssertEqual(openAI.status, 401)
        XCTAssertEqual((openAI.object["error"] as? [String: Any])?["type"] as? String, "authentication_error")
    }

    func testConstantTimeEqual() {
        XCTAssertTrue(constantTimeEqual(Array("abc".utf8), Array("abc".utf8)))
        XCTAssertFalse(constantTimeEqual(Array("abc".utf8), Array("abd".utf8)))
        XCTAssertFalse(constantTimeEqual(Array("abc".utf8), Array("ab".utf8)))
        XCTAssertFalse(constantTimeEqual([], Array("a".utf8)))
        // Lengths that differ by a multiple of 256 must not look equal.
        XCTAssertFalse(constantTimeEqual([UInt8](repeating: 0, count: 256), []))
    }

    /// `pocketsd serve` as a user runs it: SIGTERM stops it with exit status 0.
    func testServeCommandStopsOnSIGTERM() throws {
        _ = try Self.pipeline()  // converts the model file
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.cli)
        p.arguments = ["serve", "-m", Self.model, "--port", "0", "--threads", "1"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        // "serving tiny on http://127.0.0.1:PORT/ …"
        var line = [UInt8]()
        let handle = out.fileHandleForReading
        while !line.contains(UInt8(ascii: "\n")) {
            let d = handle.availableData
            if d.isEmpty { break }
            line += d
        }
        let text = String(decoding: line, as: UTF8.self)
        let port = try XCTUnwrap(text.split(separator: ":").last.flatMap { Int($0.prefix { $0.isNumber }) }, text)
        XCTAssertEqual(HTTPTestClient(port: port).get("/sdapi/v1/sd-models")?.status, 200)
        kill(p.processIdentifier, SIGTERM)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)

        let bad = Process()
        bad.executableURL = URL(fileURLWithPath: Self.cli)
        bad.arguments = ["serve", "-m", Self.model, "--port", "70000"]
        bad.standardError = FileHandle.nullDevice
        try bad.run()
        bad.waitUntilExit()
        XCTAssertEqual(bad.terminationStatus, 2)
    }
}
