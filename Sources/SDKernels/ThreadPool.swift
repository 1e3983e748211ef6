#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How large the kernels' per-part scratch blocks may be. Both give the same numbers, bit
/// for bit; they differ in how often work that depends only on the weights is redone.
public enum ScratchPolicy: Sendable {
    /// Small blocks: what keeps `--memory stream` runs at their memory figures.
    case compact
    /// Up to 4× larger Winograd F(4, 3) tile blocks (16 MiB of transformed input per part
    /// instead of 4), so each block of output channels' weights is transformed once per
    /// 4× more tiles: ≈ 5 % off an SD-Turbo 1-step 512² run (AMD EPYC Zen 3, 2 threads).
    case roomy
}

/// Runs data-parallel loops on a fixed number of threads: `threads − 1` persistent workers
/// parked on a condition variable plus the calling thread, woken once per parallel region.
/// Work is split statically (`parallelRanges(n)` hands part i the i-th contiguous range).
///
/// Against `DispatchQueue.concurrentPerform` (2-core EPYC shared with other jobs, release,
/// medians of 2000 regions): with ~32 µs of work per part both take 70–75 µs per region;
/// an empty region costs ≈ 9 µs here (`KernelBenchmark.poolOverhead`), while Dispatch
/// runs tiny bodies inline on the caller. At the few hundred regions of a UNet step
/// either is noise, so the pool stays for what Dispatch does not give: a fixed thread per
/// part (per-part scratch without locks) and `--threads` independent of the core count.
/// Spinning before sleeping (mutex-polled) made regions slower on this shared machine.
///
/// A pool runs one region at a time and is not reentrant: calling kernels with the same
/// pool from two threads at once, or from inside a region, traps. Each part owns a scratch
/// buffer (`scratch(part:count:)`) that kernels reuse across calls instead of allocating.
public final class ThreadPool: @unchecked Sendable {
    /// Parts each parallel region is split into (at least 1), the calling thread included.
    public let threads: Int
    /// Operand precision of the matrix products run on this pool (`linear`, `conv2d`,
    /// attention): a setting of whoever owns the pool (a pipeline), not of the process,
    /// so pipelines with different precisions can run side by side.
    public var precision: Kernels.Precision = .f32
    /// How much per-part scratch the kernels may take to avoid repeating work; also the
    /// owner's setting (`MemoryPlan.kernelScratch`: `roomy` under `--memory keep`).
    public var scratchPolicy: ScratchPolicy = .compact
    private let state: PoolState
    private var workers: [pthread_t] = []

    /// The CPUs this process may keep busy (`CPUBudget`): the default for `--threads`.
    public static var defaultThreadCount: Int { CPUBudget.threads }

    /// A pool of `threads` parts (values below 1 count as 1) running products at `precision`
    /// with `scratch` as its scratch policy.
    public init(threads: Int, precision: Kernels.Precision = .f32, scratch: ScratchPolicy = .compact) {
        self.threads = max(1, threads)
        self.precision = precision
        scratchPolicy = scratch
        state = PoolState(parts: self.threads)
        for index in 1..<self.threads {
            let context = Unmanaged.passRetained(WorkerContext(state: state, part: index)).toOpaque()
            #if canImport(Glibc)
            var thread = pthread_t()
            #else
            var thread: pthread_t?
            #endif
            let rc = pthread_create(&thread, nil, { raw in
                let context = Unmanaged<WorkerContext>.fromOpaque(raw!).takeRetainedValue()
                context.state.workerLoop(part: context.part)
                return nil
            }, context)
            precondition(rc == 0, "pthread_create failed: \(rc)")
            #if canImport(Glibc)
            workers.append(thread)
            #else
            workers.append(thread!)
            #endif
        }
    }

    deinit {
        state.stop()
        for thread in workers { pthread_join(thread, nil) }
    }

    /// Calls `body(part)` for each part in 0..<parts (parts ≤ threads), each on its own
    /// thread; part 0 runs on the caller. Returns when all parts are done.
    public func run(parts: Int, _ body: (Int) -> Void) {
        precondition(parts <= threads, "more parts than threads")
        state.run(parts: parts, body)
    }

    /// Calls `body(range)` for `threads` (or fewer) disjoint ranges covering 0..<count.
    public func parallelRanges(_ count: Int, _ body: (Range<Int>) -> Void) {
        let parts = min(threads, count)
        if parts <= 0 { return }
        run(parts: parts) { part in
            let lo = count * part / parts, hi = count * (part + 1) / parts
            if lo < hi { body(lo..<hi) }
        }
    }

    /// Calls `body(i)` for every i in 0..<count, split across threads.
    public func parallelFor(_ count: Int, _ body: (Int) -> Void) {
        parallelRanges(count) { range in for i in range { body(i) } }
    }

    /// A 64-byte aligned buffer of at least `count` floats owned by `part`, kept (and grown)
    /// across calls. Only valid inside a region, for that part, until the region ends.
    public func scratch(part: Int, count: Int) -> UnsafeMutablePointer<Float> {
        state.scratch(part: part, count: count)
    }

    /// A 64-byte aligned buffer of at least `count` floats for all parts, kept (and grown)
    /// across calls, for a kernel that fills it in one region and reads it in the next.
    /// Call outside a region; valid until the next call.
    public func sharedScratch(count: Int) -> UnsafeMutablePointer<Float> {
        state.scratch(part: threads, count: count)
    }
}

private final class WorkerContext {
    let state: PoolState
    let part: Int
    init(state: PoolState, part: Int) {
        self.state = state
        self.part = part
    }
}

/// Everything the workers share, separate from `ThreadPool` so that the workers do not keep
/// the pool alive (its deinit stops them).
private final class PoolState: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let done = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let parts: Int
    // Guarded by `mutex`.
    private var generation = 0
    private var job: ((Int) -> Void)?
    private var jobParts = 0
    private var pending = 0
    private var busy = false
    private var stopping = false
    // Per-part scratch; part i only touches slot i. Slot `parts` is the shared one.
    private let scratchBase: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    private let scratchFloats: UnsafeMutablePointer<Int>

    init(parts: Int) {
        self.parts = parts
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(wake, nil)
        pthread_cond_init(done, nil)
        scratchBase = .allocate(capacity: parts + 1)
        scratchBase.initialize(repeating: nil, count: parts + 1)
        scratchFloats = .allocate(capacity: parts + 1)
        scratchFloats.initialize(repeating: 0, count: parts + 1)
    }

    deinit {
        for i in 0...parts { free(scratchBase[i]) }
        scratchBase.deallocate()
        scratchFloats.deallocate()
        pthread_cond_destroy(wake)
        pthread_cond_destroy(done)
        pthread_mutex_destroy(mutex)
        wake.deallocate()
        done.deallocate()
        mutex.deallocate()
    }

    func stop() {
        pthread_mutex_lock(mutex)
        stopping = true
        pthread_cond_broadcast(wake)
        pthread_mutex_unlock(mutex)
    }

    func scratch(part: Int, count: Int) -> UnsafeMutablePointer<Float> {
        if scratchFloats[part] < count {
            free(scratchBase[part])
            var raw: UnsafeMutableRawPointer?
            let rc = posix_memalign(&raw, 64, max(count, 16) * MemoryLayout<Float>.stride)
            precondition(rc == 0 && raw != nil, "out of memory for kernel scratch")
            scratchBase[part] = raw
            scratchFloats[part] = count
        }
        return scratchBase[part]!.assumingMemoryBound(to: Float.self)
    }

    func run(parts: Int, _ body: (Int) -> Void) {
        pthread_mutex_lock(mutex)
        precondition(!busy, "ThreadPool used from two places at once (it is not reentrant)")
        busy = true
        if parts <= 1 {
            pthread_mutex_unlock(mutex)
            if parts == 1 { body(0) }
            pthread_mutex_lock(mutex)
            busy = false
            pthread_mutex_unlock(mutex)
            return
        }
        withoutActuallyEscaping(body) { escaping in
            job = escaping
            jobParts = parts
            pending = self.parts - 1
            generation &+= 1
            pthread_cond_broadcast(wake)
            pthread_mutex_unlock(mutex)

            escaping(0)

            pthread_mutex_lock(mutex)
            while pending > 0 { pthread_cond_wait(done, mutex) }
            job = nil
            busy = false
            pthread_mutex_unlock(mutex)
        }
    }

    func workerLoop(part: Int) {
        var seen = 0
        pthread_mutex_lock(mutex)
        while true {
            while generation == seen && !stopping { pthread_cond_wait(wake, mutex) }
            if stopping { break }
            seen = generation
            var job = self.job
            let active = part < jobParts
            pthread_mutex_unlock(mutex)
            if active { job?(part) }
            // Drop the reference before reporting: `run` ends `withoutActuallyEscaping`,
            // which checks that nobody still holds the closure.
            job = nil
            pthread_mutex_lock(mutex)
            pending -= 1
            if pending == 0 { pthread_cond_signal(done) }
        }
        pthread_mutex_unlock(mutex)
    }
}
