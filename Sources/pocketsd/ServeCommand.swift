import ArgumentParser
import Foundation
import Dispatch
import SDKernels
import SDPipeline
import SDServer

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve a web page and AUTOMATIC1111- and OpenAI-compatible image APIs.",
        discussion: "The model is loaded once; one image job runs at a time and others wait in a bounded queue. SIGINT or SIGTERM cancels the jobs and exits 0.")

    @Option(name: .shortAndLong, help: "The model file (.pdm).")
    var model: String

    @Option(help: "Address to listen on; 0.0.0.0 opens it to the network (phones on the same Wi-Fi).")
    var host: String = "127.0.0.1"

    @Option(help: "TCP port (0: any free port).")
    var port: Int = 7860

    @Option(help: "Jobs that may wait behind the running one; more are refused with 503.")
    var queue: Int = 8

    @Option(help: "Require this key on every request (Authorization: Bearer KEY, or as the basic-auth password).")
    var apiKey: String?

    @Option(help: "Also save every image in this folder (and serve it for OpenAI's response_format url).")
    var outputDir: String?

    @Option(help: "Weight residency: keep, stream or auto (as for generate).")
    var memory: String = "auto"

    @Option(help: threadsHelp)
    var threads: Int?

    @Option(help: ArgumentHelp(stringLiteral: PrecisionChoice.help))
    var precision: String = "auto"

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be from 0 to 65535 (got \(port))") }
        guard (0...1000).contains(queue) else { throw ValidationError("--queue must be from 0 to 1000 (got \(queue))") }
        if let apiKey, apiKey.isEmpty { throw ValidationError("--api-key must not be empty") }
        if let threads, threads < 1 || threads > 256 { throw ValidationError("--threads must be between 1 and 256") }
        guard MemoryPolicy(rawValue: memory) != nil else {
            throw ValidationError("--memory must be one of \(MemoryPolicy.allCases.map(\.rawValue).joined(separator: ", ")) (got \(memory))")
        }
        _ = try PrecisionChoice.parse(precision)
    }

    func run() throws {
        if let outputDir {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: outputDir, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw ValidationError("--output-dir \(outputDir) is not a folder")
            }
        }
        let pipeline = try StableDiffusionPipeline(modelPath: model, threads: threads ?? ThreadPool.defaultThreadCount,
                                                   memory: MemoryPolicy(rawValue: memory)!)
        try pipeline.usePrecision(option: precision)
        var configuration = ServerConfiguration()
        configuration.host = host
        configuration.port = port
        configuration.queueLimit = queue
        configuration.apiKey = apiKey
        configuration.outputDirectory = outputDir
        configuration.modelName = GenerateCommand.modelName(model)
        configuration.modelPath = model
        // Live previews through TAESD when the file carries it, as `generate --preview`.
        let renderPreview: GenerationQueue.RenderPreview? = pipeline.hasTinyAutoencoder
            ? { latents, shape in pipeline.previewImage(latents: latents, shape: shape) } : nil
        let server = PocketServer(configuration: configuration, generate: { request, progress in
            try pipeline.generate(request, progress: progress).images
        }, renderPreview: renderPreview)
        let done = DispatchSemaphore(value: 0)
        final class Failure: @unchecked Sendable { var error: Error? }
        let failure = Failure()
        let host = self.host, modelName = configuration.modelName
        Task {
            do {
                try await server.run { port in
                    print("serving \(modelName) on http://\(host):\(port)/ (Ctrl-C stops)")
                    fflush(stdout)
                }
            } catch {
                failure.error = error
            }
            done.signal()
        }
        done.wait()
        server.queue.shutdown()
        server.queue.waitUntilIdle()
        if let error = failure.error { throw ServeError(message: "could not serve on \(host):\(port): \(error)") }
    }
}

struct ServeError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
