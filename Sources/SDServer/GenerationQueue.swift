import Foundation
import SDPipeline

/// One image a job made: its PNG (with the A1111 `parameters` chunk) and what remakes it.
public struct GeneratedImage: Sendable {
    public let png: [UInt8]
    public let seed: UInt64
    public let parameters: String
}

/// Why a job ended without images.
public enum JobError: Error, Equatable, CustomStringConvertible {
    /// `--queue` jobs already wait; `retryAfter` is a guess in seconds.
    case queueFull(retryAfter: Int)
    /// Interrupted, its client went away, or the server is stopping.
    case cancelled
    /// The pipeline refused the request or failed (a message for the client).
    case failed(String)

    public var description: String {
        switch self {
        case .queueFull: return "the queue is full; try again later"
        case .cancelled: return "the job was cancelled"
        case .failed(let m): return m
        }
    }
}

/// Where the running job is, for `/sdapi/v1/progress` and the page's progress bar.
public struct ProgressSnapshot: Sendable {
    public var running = false
    public var jobID = 0
    /// UNet calls done and planned over all of the job's runs.
    public var step = 0
    public var totalSteps = 0
    public var phase = ""
    public var elapsedSeconds = 0.0
    /// Jobs waiting behind the running one.
    public var queued = 0
    /// The latest preview of the first image: the queue's `RenderPreview` (TAESD at full
    /// size) once one has been rendered for this job, else the latent-size `LatentPreview`.
    public var preview: RGBImage?

    public var fraction: Double { totalSteps > 0 ? min(1, Double(step) / Double(totalSteps)) : 0 }
    /// A1111's estimate: time so far scaled by what is left.
    public var etaSeconds: Double { fraction > 0 ? elapsedSeconds / fraction - elapsedSeconds : 0 }
}

/// A generation waiting for or holding the one worker. Several runs (A1111's n_iter) run
/// one after another, so memory is that of one batch.
public final class GenerationJob: @unchecked Sendable {
    public let id: Int
    let runs: [GenerationRequest]
    let modelName: String
    private let lock = NSLock()
    private var continuation: CheckedContinuation<[GeneratedImage], Error>?
    private var cancelled = false

    init(id: Int, runs: [GenerationRequest], modelName: String) {
        self.id = id
        self.runs = runs
        self.modelName = modelName
    }

    var isCancelled: Bool { lock.locked { cancelled } }

    /// Marks the job cancelled; the worker stops it at the next step boundary.
    func markCancelled() { lock.locked { cancelled = true } }

    func attach(_ c: CheckedContinuation<[GeneratedImage], Error>) { lock.locked { continuation = c } }

    /// Resumes the waiting handler once; later calls do nothing.
    func finish(_ result: Result<[GeneratedImage], Error>) {
        let c: CheckedContinuation<[GeneratedImage], Error>? = lock.locked {
            defer { continuation = nil }
            return continuation
        }
        c?.resume(with: result)
    }
}

/// Runs a generation function for one job at a time on its own thread (the pipeline is
/// synchronous and uses every core), taking jobs first in, first out from a queue of at most
/// `limit` waiting jobs. Cancelling a waiting job frees its place at once; cancelling the
/// running one stops it at the next step.
public final class GenerationQueue: @unchecked Sendable {
    /// Makes the images of one run; `progress` returns false to stop.
    public typealias Generate = (GenerationRequest, @escaping (StableDiffusionPipeline.Progress) -> Bool) throws -> [RGBImage]
    /// A step's latents [B, C, h, w] as a preview of the first image (e.g.
    /// `StableDiffusionPipeline.previewImage`: TAESD when the model file has it). Runs on
    /// the generation thread between steps, so it may use the pipeline; nil: no picture.
    public typealias RenderPreview = (_ latents: [Float], _ shape: [Int]) -> RGBImage?

    public let limit: Int
    private let generate: Generate
    private let renderPreview: RenderPreview?
    /// A client asked for a picture since the last rendered one: the next step renders.
    private var previewWanted = false
    private var renderedPreview: RGBImage?
    private let condition = NSCondition()
    private var waiting: [GenerationJob] = []
    private var running: GenerationJob?
    private var snapshot = ProgressSnapshot()
    private var latestLatents: ([Float], [Int])?
    private var stopped = false
    private var nextID = 1
    /// Seconds the last finished job took, for Retry-After.
    private var lastJobSeconds = 10.0
    private var thread: Thread?

    /// `renderPreview`, when given, makes the progress picture of a running job: rendered
    /// at most once per step, and only for steps after a client asked for a picture
    /// (`progress(rendering:)`), since it costs a decode (TAESD at 512²: ≈ 1.3 s on 2 Zen 3
    /// cores, next to a 7 s SD 1.5 step). Until the first one is ready, and without it, the
    /// picture is `LatentPreview`'s latent-size one.
    public init(limit: Int, generate: @escaping Generate, renderPreview: RenderPreview? = nil) {
        self.limit = limit
        self.generate = generate
        self.renderPreview = renderPreview
        let thread = Thread { [unowned self] in self.work() }
        thread.name = "generation"
        // The pipeline's own pool does the arithmetic; this thread only drives it.
        thread.stackSize = 8 << 20
        self.thread = thread
        thread.start()
    }

    /// Queues `runs` and waits for the images; throws `JobError`. Calling `cancel` with the
    /// job given to `onQueued` stops it.
    public func submit(_ runs: [GenerationRequest], modelName: String,
                       onQueued: (GenerationJob) -> Void = { _ in }) async throws -> [GeneratedImage] {
        let job: GenerationJob = condition.locked {
            defer { nextID += 1 }
            return GenerationJob(id: nextID, runs: runs, modelName: modelName)
        }
        onQueued(job)
        return try await withCheckedThrowingContinuation { c in
            job.attach(c)
            condition.lock()
            if stopped {
                condition.unlock()
                job.finish(.failure(JobError.cancelled))
            } else if waiting.count >= limit || job.isCancelled {
                let full = !job.isCancelled
                let retry = Int(lastJobSeconds.rounded(.up)) * max(1, waiting.count)
                condition.unlock()
                job.finish(.failure(full ? JobError.queueFull(retryAfter: max(1, min(retry, 3600))) : JobError.cancelled))
            } else {
                waiting.append(job)
                condition.signal()
                condition.unlock()
            }
        }
    }

    /// Stops `job`: a waiting one leaves the queue now, a running one at its next step.
    public func cancel(_ job: GenerationJob) {
        job.markCancelled()
        condition.lock()
        let index = waiting.firstIndex { $0 === job }
        if let index { waiting.remove(at: index) }
        condition.unlock()
        if index != nil { job.finish(.failure(JobError.cancelled)) }
    }

    /// Stops the running job (A1111's interrupt); waiting jobs go on. True if one ran.
    @discardableResult
    public func interrupt() -> Bool {
        let job = condition.locked { running }
        job?.markCancelled()
        return job != nil
    }

    /// Cancels every job and stops the worker (server shutdown).
    public func shutdown() {
        condition.lock()
        stopped = true
        let dropped = waiting
        waiting.removeAll()
        running?.markCancelled()
        condition.broadcast()
        condition.unlock()
        for job in dropped { job.finish(.failure(JobError.cancelled)) }
    }

    /// Waits until no job runs (after `shutdown`, so no output is being made).
    public func waitUntilIdle(timeout: Double = 60) {
        let deadline = Date(timeIntervalSinceNow: timeout)
        condition.lock()
        while running != nil, condition.wait(until: deadline) {}
        condition.unlock()
    }

    /// Where the running job is, with its latest picture; `rendering` asks for a rendered
    /// picture (`RenderPreview`) at the next step, for a later call.
    public func progress(rendering: Bool) -> ProgressSnapshot {
        condition.locked {
            var s = snapshot
            s.queued = waiting.count
            if s.running {
                if let rendered = renderedPreview {
                    s.preview = rendered
                } else if let (latents, shape) = latestLatents {
                    s.preview = LatentPreview.image(latents: latents, shape: shape)
                }
                // Asked once a picture is on show, so a client's first one is the quick
                // latent-size picture and a render follows.
                if rendering && renderPreview != nil && latestLatents != nil { previewWanted = true }
            }
            return s
        }
    }

    private func work() {
        while true {
            condition.lock()
            while waiting.isEmpty && !stopped { condition.wait() }
            if stopped {
                condition.unlock()
                return
            }
            let job = waiting.removeFirst()
            running = job
            snapshot = ProgressSnapshot(running: true, jobID: job.id, phase: "starting")
            latestLatents = nil
            renderedPreview = nil
            previewWanted = false
            condition.unlock()

            let start = Date()
            let result = run(job, start: start)
            condition.lock()
            running = nil
            snapshot = ProgressSnapshot()
            latestLatents = nil
            renderedPreview = nil
            previewWanted = false
            lastJobSeconds = max(1, Date().timeIntervalSince(start))
            condition.broadcast()
            condition.unlock()
            job.finish(result)
        }
    }

    private func run(_ job: GenerationJob, start: Date) -> Result<[GeneratedImage], Error> {
        var images: [GeneratedImage] = []
        var callsPerRun = 0
        for (r, request) in job.runs.enumerated() {
            if job.isCancelled { return .failure(JobError.cancelled) }
            do {
                let pictures = try generate(request) { [self] p in
                    let toRender: ([Float], [Int])? = condition.locked {
                        if callsPerRun == 0 { callsPerRun = p.totalSteps }
                        let done = r * callsPerRun + (p.phase == .denoising ? p.step : p.phase == .vaeDecode ? callsPerRun : 0)
                        snapshot.step = done
                        snapshot.totalSteps = max(done, callsPerRun * job.runs.count)
                        snapshot.phase = p.phase.rawValue
                        snapshot.elapsedSeconds = Date().timeIntervalSince(start)
                        guard let latents = p.latents else { return nil }
                        latestLatents = (latents, p.latentShape)
                        guard previewWanted, p.phase == .denoising else { return nil }
                        previewWanted = false
                        return (latents, p.latentShape)
                    }
                    // Outside the lock: progress polls answer (with the older picture) meanwhile.
                    if let (latents, shape) = toRender, let render = renderPreview, let picture = render(latents, shape) {
                        condition.locked { if running === job { renderedPreview = picture } }
                    }
                    return !job.isCancelled
                }
                for (i, picture) in pictures.enumerated() {
                    let parameters = automatic1111Parameters(image: i, request: request, modelName: job.modelName)
                    guard let png = PNGWriter.encode(picture, text: [("parameters", parameters)]) else {
                        return .failure(JobError.failed("could not encode the PNG"))
                    }
                    images.append(GeneratedImage(png: png, seed: request.seed(ofImage: i), parameters: parameters))
                }
            } catch PipelineError.cancelled {
                return .failure(JobError.cancelled)
            } catch {
                return .failure(JobError.failed("\(error)"))
            }
        }
        return .success(images)
    }
}

extension NSLocking {
    /// Runs `body` holding the lock.
    func locked<T>(_ body: () throws -> T) rethrows -> T {
        lock()
        defer { unlock() }
        return try body()
    }
}
