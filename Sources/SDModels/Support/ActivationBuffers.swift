import Glibc

/// Where large `Tensor` buffers come from: mapped straight from the system, and recycled.
///
/// Modules allocate the same shapes over and over (within a block, every block of a level,
/// every step), and a fresh mapping costs a zero-filled page fault per 4 KiB. So a freed
/// buffer is kept for a request of the same size soon after, under two rules: live plus
/// kept bytes never exceed the most bytes that were ever live at once, and a buffer not
/// asked for again within `maxAge` requests is unmapped. The first rule keeps the
/// activations' own peak; the second keeps freed buffers from sitting in memory while the
/// next layer brings in large weights and kernel scratch, which would add to the process's
/// peak. Measured, SD 1.5 at 512², 2 steps, `stream`: no recycling 2.4 M page faults and
/// 5.9 s of system time, peak 125 MiB; `maxAge` 2: 1.2 M faults, 4.1 s, 125 MiB; `maxAge` 8
/// or more: 0.9–1.1 M faults, but 132–137 MiB. `trim()` returns everything.
///
/// Mapping rather than malloc: glibc raises its mmap threshold after the first large free
/// and would then keep freed activations in its heap beyond anyone's control.
public enum ActivationBuffers {
    /// Buffers from this size up are mapped and recycled; smaller ones use malloc.
    static let mapThresholdBytes = 256 << 10

    private static let state = State()

    /// A buffer of at least `bytes` (page-rounded); `release` it with the same count.
    static func take(_ bytes: Int) -> UnsafeMutableRawPointer {
        state.take(roundedBytes(bytes))
    }

    static func release(_ p: UnsafeMutableRawPointer, bytes: Int) {
        state.release(p, roundedBytes(bytes))
    }

    /// Unmaps every kept buffer and starts the peak over (call between phases, so one
    /// phase's shapes do not stay resident into the next).
    public static func trim() { state.trim() }

    /// Bytes kept for reuse (not in use).
    public static var keptBytes: Int { state.counts().kept }

    private static func roundedBytes(_ bytes: Int) -> Int {
        let page = 4096
        return (bytes + page - 1) / page * page
    }

    /// Requests after which an unclaimed buffer is unmapped (see above).
    static let maxAge = 2

    private final class State: @unchecked Sendable {
        struct Kept {
            let pointer: UnsafeMutableRawPointer
            let bytes: Int
            let keptAt: Int  // request clock when it was freed
        }
        private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        private var kept: [Kept] = []  // oldest first
        private var keptBytes = 0
        private var liveBytes = 0
        private var peakLiveBytes = 0
        private var clock = 0

        init() { pthread_mutex_init(mutex, nil) }

        func take(_ bytes: Int) -> UnsafeMutableRawPointer {
            pthread_mutex_lock(mutex)
            defer { pthread_mutex_unlock(mutex) }
            clock += 1
            liveBytes += bytes
            peakLiveBytes = max(peakLiveBytes, liveBytes)
            while let oldest = kept.first, clock - oldest.keptAt > ActivationBuffers.maxAge {
                unmap(oldest)
                kept.removeFirst()
            }
            if let i = kept.lastIndex(where: { $0.bytes == bytes }) {
                keptBytes -= bytes
                return kept.remove(at: i).pointer
            }
            // A new mapping: first unmap kept buffers, oldest first, until the peak holds.
            while let oldest = kept.first, liveBytes + keptBytes > peakLiveBytes {
                unmap(oldest)
                kept.removeFirst()
            }
            guard let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
                  p != MAP_FAILED else {
                fatalError("out of memory mapping a \(bytes)-byte activation buffer")
            }
            return p
        }

        func release(_ p: UnsafeMutableRawPointer, _ bytes: Int) {
            pthread_mutex_lock(mutex)
            defer { pthread_mutex_unlock(mutex) }
            liveBytes -= bytes
            // live + kept is unchanged by keeping it, so the peak rule still holds.
            kept.append(Kept(pointer: p, bytes: bytes, keptAt: clock))
            keptBytes += bytes
        }

        private func unmap(_ k: Kept) {
            munmap(k.pointer, k.bytes)
            keptBytes -= k.bytes
        }

        func trim() {
            pthread_mutex_lock(mutex)
            defer { pthread_mutex_unlock(mutex) }
            for k in kept { unmap(k) }
            kept = []
            peakLiveBytes = liveBytes
        }

        func counts() -> (live: Int, kept: Int) {
            pthread_mutex_lock(mutex)
            defer { pthread_mutex_unlock(mutex) }
            return (liveBytes, keptBytes)
        }
    }
}
