import Foundation
import Hummingbird
import SDFormat
import SDPipeline

/// The subset of AUTOMATIC1111's `/sdapi/v1` that clients use, with its field names.
extension PocketServer {
    func addAutomatic1111Routes(to router: Router<ServerContext>) {
        router.post("/sdapi/v1/txt2img") { [self] request, context in
            let body = try await readBody(request)
            let parameters = try JobParameters.automatic1111(body: body)
            let seed = parameters.seed ?? randomSeed()
            let images = try await generate(parameters, seed: seed, context: context)
            return jsonResponse(automatic1111Result(parameters, seed: seed, images: images))
        }
        addImg2ImgRoute(to: router)
        router.get("/sdapi/v1/progress") { [self] request, _ in
            let skipImage = request.uri.queryParameters.get("skip_current_image") == "true"
            return jsonResponse(automatic1111Progress(queue.progress(rendering: !skipImage), includeImage: !skipImage))
        }
        router.post("/sdapi/v1/interrupt") { [self] _, _ in
            queue.interrupt()
            return jsonResponse(.object([]))
        }
        router.post("/sdapi/v1/skip") { [self] _, _ in
            queue.interrupt()
            return jsonResponse(.object([]))
        }
        router.get("/sdapi/v1/samplers") { _, _ in
            jsonResponse(.array(JobParameters.samplers.map { s -> JSON in
                .object([("name", .string(s.name)), ("aliases", .array(s.aliases.map(JSON.string))), ("options", .object([]))])
            }))
        }
        router.get("/sdapi/v1/sd-models") { [self] _, _ in
            jsonResponse(.array([.object([
                ("title", .string(configuration.modelName)), ("model_name", .string(configuration.modelName)),
                ("hash", .null), ("sha256", .null), ("filename", .string(configuration.modelPath)), ("config", .null),
            ])]))
        }
        router.get("/sdapi/v1/options") { [self] _, _ in jsonResponse(automatic1111Options()) }
        // Clients set the checkpoint before generating; with one model loaded, the settings
        // are accepted and ignored (the body is still read within the limit).
        router.post("/sdapi/v1/options") { [self] request, _ in
            _ = try await readBody(request)
            return jsonResponse(.null)
        }
    }

    func automatic1111Options() -> JSON {
        .object([("sd_model_checkpoint", .string(configuration.modelName)), ("sd_checkpoint_hash", .null),
                 ("samples_format", .string("png")), ("CLIP_stop_at_last_layers", .number(1))])
    }

    /// The txt2img answer: base64 PNGs, the request's settings, and `info` as a JSON string.
    /// `extraSettings` (img2img's strength) join the echoed settings and `info`.
    func automatic1111Result(_ p: JobParameters, seed: UInt64, images: [GeneratedImage],
                             extraSettings: [(String, JSON)] = []) -> JSON {
        let seeds = images.map { JSON.number(Double($0.seed)) }
        let sampler = JobParameters.samplers.first { $0.kind == p.scheduler }?.name ?? p.scheduler.displayName
        let settings: [(String, JSON)] = [
            ("prompt", .string(p.prompt)), ("negative_prompt", .string(p.negativePrompt)),
            ("seed", .number(Double(seed))), ("steps", .number(Double(p.steps))), ("cfg_scale", .number(Double(p.cfgScale))),
            ("width", .number(Double(p.width))), ("height", .number(Double(p.height))), ("sampler_name", .string(sampler)),
            ("batch_size", .number(Double(p.batchSize))), ("n_iter", .number(Double(p.iterations))),
        ] + extraSettings
        let info: JSON = .object(settings + [
            ("all_prompts", .array(images.map { _ in JSON.string(p.prompt) })),
            ("all_negative_prompts", .array(images.map { _ in JSON.string(p.negativePrompt) })),
            ("all_seeds", .array(seeds)), ("subseed", .number(-1)), ("all_subseeds", .array(images.map { _ in JSON.number(-1) })),
            ("sd_model_name", .string(configuration.modelName)),
            ("infotexts", .array(images.map { JSON.string($0.parameters) })),
        ])
        return .object([
            ("images", .array(images.map { JSON.string(Data($0.png).base64EncodedString()) })),
            ("parameters", .object(settings)),
            ("info", .string(info.serialized)),
        ])
    }

    func automatic1111Progress(_ s: ProgressSnapshot, includeImage: Bool) -> JSON {
        var image: JSON = .null
        if includeImage, let preview = s.preview, let png = PNGWriter.encode(preview) {
            image = .string(Data(png).base64EncodedString())
        }
        return .object([
            ("progress", .number(s.fraction)), ("eta_relative", .number(s.etaSeconds)),
            ("state", .object([
                ("skipped", .bool(false)), ("interrupted", .bool(false)),
                ("job", .string(s.running ? "job \(s.jobID)" : "")),
                ("job_count", .number(Double(s.queued + (s.running ? 1 : 0)))),
                ("job_no", .number(0)), ("job_timestamp", .string("")),
                ("sampling_step", .number(Double(s.step))), ("sampling_steps", .number(Double(s.totalSteps))),
                ("phase", .string(s.phase)), ("elapsed", .number(s.elapsedSeconds)),
            ])),
            ("current_image", image), ("textinfo", .null),
        ])
    }
}

/// OpenAI's images API: `POST /v1/images/generations`.
extension PocketServer {
    func addOpenAIRoutes(to router: Router<ServerContext>) {
        router.post("/v1/images/generations") { [self] request, context in
            let body = try await readBody(request)
            let (parameters, wantsURL) = try JobParameters.openAI(body: body)
            if wantsURL && configuration.outputDirectory == nil {
                throw APIError.invalid("response_format", "url needs the server to run with --output-dir; ask for b64_json")
            }
            let seed = parameters.seed ?? randomSeed()
            let images = try await generate(parameters, seed: seed, context: context)
            let data: [JSON] = images.map { image in
                wantsURL ? .object([("url", .string(baseURL(request) + "/outputs/" + Self.outputName(image)))])
                    : .object([("b64_json", .string(Data(image.png).base64EncodedString())), ("revised_prompt", .string(parameters.prompt))])
            }
            return jsonResponse(.object([("created", .number(Date().timeIntervalSince1970.rounded(.down))), ("data", .array(data))]))
        }
        router.get("/v1/models") { [self] _, _ in
            jsonResponse(.object([("object", .string("list")), ("data", .array([.object([
                ("id", .string(configuration.modelName)), ("object", .string("model")), ("owned_by", .string("pocketsd")),
            ])]))]))
        }
    }

    /// The address the client used, for absolute image URLs.
    func baseURL(_ request: Request) -> String {
        let host = request.head.authority ?? "\(configuration.host):\(configuration.port)"
        return "http://" + host
    }
}

/// A 32-bit seed, as A1111 draws them, so it is easy to type back.
func randomSeed() -> UInt64 { UInt64(UInt32.random(in: 0...UInt32.max)) }
