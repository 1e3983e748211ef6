import Foundation
import Hummingbird
import Logging
import NIOCore
import SDFormat
import SDPipeline
import ServiceLifecycle

/// How `pocketsd serve` runs.
public struct ServerConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 7860
    /// Jobs that may wait behind the running one; more get 503.
    public var queueLimit = 8
    /// When set, every request must carry it (Bearer, or as the password of basic auth).
    public var apiKey: String?
    /// When set, every image is also saved here and served under /outputs/ (OpenAI `url`).
    public var outputDirectory: String?
    /// The model's name in PNG metadata and `/sdapi/v1/sd-models` (the file's name).
    public var modelName = "model"
    public var modelPath = ""
    /// The largest request body accepted; a larger one gets 413.
    public var maxBodyBytes = 64 * 1024
    /// The largest body of `/sdapi/v1/img2img`, which carries base64 PNGs (4/3 of their size).
    public var maxImageBodyBytes = 16 << 20
    /// A connection that sends nothing for this long while its request is read is closed.
    public var idleTimeoutSeconds: Int64 = 15

    public init() {}
}

/// The request context: Hummingbird's, plus the connection, to cancel a job whose client
/// went away.
public struct ServerContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// The HTTP server: the web page, the AUTOMATIC1111 and OpenAI APIs, over one queue.
public final class PocketServer: Sendable {
    public let configuration: ServerConfiguration
    public let queue: GenerationQueue
    /// img2img requests in flight: the running job and the queue's places, no more.
    let imageUploads: UploadGate

    /// `renderPreview`: the progress picture of a running job (see `GenerationQueue.init`);
    /// `pocketsd serve` passes the pipeline's TAESD preview when the model file has TAESD.
    public init(configuration: ServerConfiguration, generate: @escaping GenerationQueue.Generate,
                renderPreview: GenerationQueue.RenderPreview? = nil) {
        self.configuration = configuration
        self.queue = GenerationQueue(limit: configuration.queueLimit, generate: generate, renderPreview: renderPreview)
        self.imageUploads = UploadGate(limit: configuration.queueLimit + 1)
    }

    /// Serves until SIGINT/SIGTERM (then cancels the jobs and returns) or until the task is
    /// cancelled. `onRunning` receives the bound port (the actual one when `port` is 0).
    public func run(handleSignals: Bool = true, onRunning: @escaping @Sendable (Int) -> Void = { _ in }) async throws {
        var logger = Logger(label: "pocketsd")
        // Hummingbird reports a cancelled connection at error level; only failures to serve matter.
        logger.logLevel = .critical
        let app = Application(
            router: makeRouter(),
            server: .http1(configuration: .init(additionalChannelHandlers: [CloseOnEndOfInput()],
                                                 idleTimeout: .seconds(configuration.idleTimeoutSeconds))),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "pocketsd"),
            services: [QueueService(queue: queue)],
            onServerRunning: { channel in onRunning(channel.localAddress?.port ?? 0) },
            logger: logger)
        defer { queue.shutdown() }
        if handleSignals {
            try await app.runService(gracefulShutdownSignals: [.sigterm, .sigint])
        } else {
            try await app.run()
        }
    }

    func makeRouter() -> Router<ServerContext> {
        let router = Router(context: ServerContext.self)
        router.add(middleware: ErrorMiddleware())
        if let key = configuration.apiKey { router.add(middleware: AuthMiddleware(key: key)) }
        router.get("/") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
                     body: .init(byteBuffer: ByteBuffer(string: WebPage.html)))
        }
        router.get("/health") { _, _ in jsonResponse(.object([("status", .string("ok"))])) }
        addAutomatic1111Routes(to: router)
        addOpenAIRoutes(to: router)
        if configuration.outputDirectory != nil {
            router.get("/outputs/:name") { [self] _, context in try outputFile(context.parameters.get("name") ?? "") }
        }
        return router
    }

    /// Reads the body, refusing more than `maxBodyBytes` without storing it.
    func readBody(_ request: Request, limit: Int? = nil) async throws -> [UInt8] {
        let limit = limit ?? configuration.maxBodyBytes
        if let declared = request.headers[.contentLength].flatMap({ Int($0) }), declared > limit {
            throw APIError(413, "the body is larger than \(limit) bytes")
        }
        var bytes: [UInt8] = []
        for try await chunk in request.body {
            guard bytes.count + chunk.readableBytes <= limit else { throw APIError(413, "the body is larger than \(limit) bytes") }
            bytes += chunk.readableBytesView
        }
        return bytes
    }

    /// Runs `parameters` through the queue, cancelling the job if the client disconnects.
    func generate(_ parameters: JobParameters, seed: UInt64, imageInput: ImageInput? = nil,
                  context: ServerContext) async throws -> [GeneratedImage] {
        let runs = parameters.runs(seed: seed).map { run in
            var r = run
            r.imageInput = imageInput
            return r
        }
        let images = try await queue.submit(runs, modelName: configuration.modelName) { job in
            context.channel.closeFuture.whenComplete { [queue] _ in queue.cancel(job) }
        }
        if let dir = configuration.outputDirectory {
            for image in images {
                try? AtomicFile.write(dir + "/" + Self.outputName(image), bytes: image.png)
            }
        }
        return images
    }

    static func outputName(_ image: GeneratedImage) -> String {
        // The seed names the file; the content hash keeps runs with the same seed apart.
        "\(image.seed)-\(String(fnv1a(image.png), radix: 16)).png"
    }

    func outputFile(_ name: String) throws -> Response {
        guard let dir = configuration.outputDirectory, name.hasSuffix(".png"), name.count <= 80,
              name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == ".") }), !name.hasPrefix(".") else {
            throw APIError(404, "no such file")
        }
        guard let data = FileManager.default.contents(atPath: dir + "/" + name) else { throw APIError(404, "no such file") }
        return Response(status: .ok, headers: [.contentType: "image/png"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// 64-bit FNV-1a: a short, stable name for a file's content (not a security hash).
func fnv1a(_ bytes: [UInt8]) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
    return h
}

func jsonResponse(_ value: JSON, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
    var fields = headers
    fields[.contentType] = "application/json"
    return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(string: value.serialized)))
}

/// Turns `APIError`s (and anything unexpected) into JSON, in the shape of the API the path
/// belongs to: OpenAI's `{"error": {...}}` under /v1/, A1111's `{"error", "detail"}` elsewhere.
struct ErrorMiddleware: RouterMiddleware {
    typealias Context = ServerContext

    func handle(_ request: Request, context: ServerContext, next: (Request, ServerContext) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            return Self.response(error, path: request.uri.path)
        } catch let error as JobError {
            switch error {
            case .queueFull(let seconds):
                var r = Self.response(APIError(503, error.description), path: request.uri.path)
                r.headers[.retryAfter] = String(seconds)
                return r
            case .cancelled: return Self.response(APIError(409, error.description), path: request.uri.path)
            case .failed(let m): return Self.response(APIError(500, m), path: request.uri.path)
            }
        } catch let error as HTTPError {
            return Self.response(APIError(error.status.code, error.body ?? Self.statusNames[error.status.code] ?? "error"), path: request.uri.path)
        } catch {
            return Self.response(APIError(500, "\(error)"), path: request.uri.path)
        }
    }

    static func response(_ error: APIError, path: String) -> Response {
        let status = HTTPResponse.Status(code: error.status)
        let body: JSON
        let reason = statusNames[error.status] ?? "Error"
        if path.hasPrefix("/v1/") {
            let type = error.status == 401 ? "authentication_error" : error.status >= 500 ? "server_error" : "invalid_request_error"
            body = .object([("error", .object([("message", .string(error.message)), ("type", .string(type)),
                                               ("param", error.field.map(JSON.string) ?? .null), ("code", .null)]))])
        } else {
            body = .object([("error", .string(reason)), ("detail", .string(error.message)),
                            ("field", error.field.map(JSON.string) ?? .null)])
        }
        return jsonResponse(body, status: status)
    }

    static let statusNames = [400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
                              409: "Conflict", 413: "Content Too Large", 422: "Unprocessable Content",
                              500: "Internal Server Error", 503: "Service Unavailable"]
}

/// With `--api-key`: `Authorization: Bearer KEY`, or basic auth with KEY as the password
/// (A1111's `--api-auth user:password` clients; browsers ask for it), else 401.
struct AuthMiddleware: RouterMiddleware {
    typealias Context = ServerContext
    let key: String

    func handle(_ request: Request, context: ServerContext, next: (Request, ServerContext) async throws -> Response) async throws -> Response {
        if let header = request.headers[.authorization], Self.accepts(header, key: key) {
            return try await next(request, context)
        }
        var r = ErrorMiddleware.response(APIError(401, "a valid API key is required (Authorization: Bearer KEY)"), path: request.uri.path)
        r.headers[.wwwAuthenticate] = "Basic realm=\"pocketsd\", charset=\"UTF-8\""
        return r
    }

    static func accepts(_ header: String, key: String) -> Bool {
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2 else { return false }
        switch parts[0].lowercased() {
        case "bearer":
            return constantTimeEqual(Array(parts[1].utf8), Array(key.utf8))
        case "basic":
            guard let decoded = Data(base64Encoded: String(parts[1])),
                  let colon = decoded.firstIndex(of: UInt8(ascii: ":")) else { return false }
            // The user name is not checked: the key alone grants access.
            return constantTimeEqual(Array(decoded[decoded.index(after: colon)...]), Array(key.utf8))
        default:
            return false
        }
    }
}

/// Compares without stopping at the first difference, so the time taken does not tell
/// how much of a guessed key was right.
func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    var difference = UInt8(truncatingIfNeeded: a.count ^ b.count)
    for i in 0..<max(a.count, b.count) {
        difference |= (i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0)
    }
    return difference == 0 && a.count == b.count
}

/// Cancels the jobs when the server shuts down gracefully (SIGINT/SIGTERM), so a running
/// generation stops at its next step instead of holding the shutdown.
struct QueueService: Service {
    let queue: GenerationQueue

    func run() async throws {
        try? await gracefulShutdown()
        queue.shutdown()
    }
}

/// Closes a connection whose client stopped sending (TCP FIN). Hummingbird allows half-open
/// connections, so without this a client that went away goes unnoticed until the answer is
/// written; closing lets `closeFuture` cancel its job at the next step. (A client that
/// half-closes on purpose after its request loses the answer; HTTP clients do not.)
final class CloseOnEndOfInput: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event { context.close(promise: nil) }
        context.fireUserInboundEventTriggered(event)
    }
}
