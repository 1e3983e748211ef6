import Glibc

/// Resident memory of this process as Linux reports it in /proc/self/status.
public struct MemoryStats: Sendable, Equatable {
    /// Peak resident set (VmHWM), bytes.
    public var peakResident: Int
    /// Resident set split into anonymous (heap, activations, stacks) and file-backed
    /// (mapped weights, code) pages, bytes: now for `current()`; in phase reports, at the
    /// highest resident set `MemorySampler` saw during the phase.
    public var residentAnonymous: Int
    /// File-backed resident pages (RssFile), bytes; see `residentAnonymous`.
    public var residentFile: Int

    /// Figures in bytes.
    public init(peakResident: Int, residentAnonymous: Int, residentFile: Int) {
        self.peakResident = peakResident
        self.residentAnonymous = residentAnonymous
        self.residentFile = residentFile
    }

    /// Reads VmHWM, RssAnon and RssFile from /proc/self/status now; zeros where unavailable.
    public static func current() -> MemoryStats {
        var stats = MemoryStats(peakResident: 0, residentAnonymous: 0, residentFile: 0)
        guard let fp = fopen("/proc/self/status", "r") else { return stats }
        defer { fclose(fp) }
        var line = [CChar](repeating: 0, count: 256)
        while fgets(&line, 256, fp) != nil {
            let s = String(cString: line)
            // "VmHWM:\t   12345 kB"
            func kilobytes() -> Int { (Int(String(s.filter(\.isNumber))) ?? 0) * 1024 }
            if s.hasPrefix("VmHWM:") { stats.peakResident = kilobytes() }
            else if s.hasPrefix("RssAnon:") { stats.residentAnonymous = kilobytes() }
            else if s.hasPrefix("RssFile:") { stats.residentFile = kilobytes() }
        }
        return stats
    }
}

/// Each phase's own peak, without resetting the process's: VmHWM stays the whole run's
/// peak, so `getrusage`, `/usr/bin/time -v`, cgroups and `--stats` report the same number.
/// (Writing "5" to /proc/self/clear_refs would give per-phase VmHWM, but it resets the
/// figure those tools read too.) A phase that raised VmHWM peaked at the new VmHWM,
/// exactly; one that did not peaked at the highest resident set `MemorySampler` saw in it
/// (sampled every 2 ms, so it can miss a shorter spike below the run's peak).
public final class PhasePeaks: @unchecked Sendable {
    private let sampler = MemorySampler()
    private var lastHighWater: Int

    /// Starts tracking from the process's current peak.
    public init() {
        lastHighWater = MemoryStats.current().peakResident
        _ = sampler.take()
    }

    /// The peak since the previous call (or `init`), and how the resident set split into
    /// anonymous and file pages at the sampled peak.
    public func take() -> MemoryStats {
        var memory = MemoryStats.current()
        let sampled = sampler.take()
        let highWater = memory.peakResident
        if highWater <= lastHighWater, sampled.resident > 0 { memory.peakResident = min(highWater, sampled.resident) }
        lastHighWater = highWater
        if sampled.anonymous + sampled.file > 0 {
            memory.residentAnonymous = sampled.anonymous
            memory.residentFile = sampled.file
        }
        return memory
    }

    /// Ends the sampling thread.
    public func stop() { sampler.stop() }
}

/// Watches the resident set from a thread of its own (every 2 ms, /proc/self/statm), so a
/// phase can report how its peak split into anonymous and file pages: VmHWM has the peak
/// but not the split, nor (since it is never reset) a later phase's own lower peak.
/// Samples can miss a spike shorter than the period; see `PhasePeaks`.
final class MemorySampler: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var running = true
    private var best = (resident: 0, file: 0)
    private var thread: pthread_t?
    private let fd: Int32
    private let pageBytes = Int(sysconf(Int32(_SC_PAGESIZE)))

    init() {
        pthread_mutex_init(mutex, nil)
        fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        var t = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        if pthread_create(&t, nil, { raw in
            let sampler = Unmanaged<MemorySampler>.fromOpaque(raw!).takeRetainedValue()
            sampler.loop()
            return nil
        }, context) == 0 {
            thread = t
        } else {
            Unmanaged<MemorySampler>.fromOpaque(context).release()
        }
    }

    /// (resident, file-backed) bytes now, from statm's "size resident shared …" pages.
    private func sample() -> (resident: Int, file: Int)? {
        var buffer = [CChar](repeating: 0, count: 128)
        let n = pread(fd, &buffer, 127, 0)
        guard n > 0 else { return nil }
        let fields = String(cString: buffer).split(separator: " ")
        guard fields.count >= 3, let resident = Int(fields[1]), let shared = Int(fields[2]) else { return nil }
        return (resident * pageBytes, shared * pageBytes)
    }

    private func loop() {
        while true {
            pthread_mutex_lock(mutex)
            let keepGoing = running
            if keepGoing, let s = sample(), s.resident > best.resident { best = s }
            pthread_mutex_unlock(mutex)
            if !keepGoing { return }
            usleep(2000)
        }
    }

    /// The split at the highest resident set since the last call (or now, if higher),
    /// then starts over.
    func take() -> (resident: Int, anonymous: Int, file: Int) {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        if fd >= 0, let s = sample(), s.resident >= best.resident { best = s }
        let result = (resident: best.resident, anonymous: max(0, best.resident - best.file), file: best.file)
        best = (0, 0)
        return result
    }

    func stop() {
        pthread_mutex_lock(mutex)
        running = false
        pthread_mutex_unlock(mutex)
        if let thread { pthread_join(thread, nil) }
        if fd >= 0 { close(fd) }
    }
}
