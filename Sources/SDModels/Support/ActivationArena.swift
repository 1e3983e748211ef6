import Glibc
import SDKernels

// Where `Tensor` buffers come from (docs/MEMORY.md, "Activations").
//
// A model call allocates the same tensors in the same order every time it runs with the
// same shapes: which tensors exist, how large they are and when the last reference to each
// goes (ARC) depend on the config and the input's batch and size, never on the values. So
// each phase of a run is planned before it starts:
//
// 1. `ActivationArena.plan { … }` runs the phase's model call once with the kernels
//    skipped (`Kernels.isPlanning`) and records every Tensor allocation (its size) and
//    release, in order. Scalar Swift loops in model code still run, on garbage values; all
//    of the recorded tensors share one scratch buffer, since no value matters.
// 2. `ActivationPlanner.layout` places the recorded lifetimes in one arena: greedy by size,
//    each tensor at the lowest 64-byte-aligned offset free over its whole lifetime (the
//    "greedy by size" offset planner of TFLite and ONNX Runtime).
// 3. `ActivationArena(plan:)` maps the arena once; each `run { … }` (one UNet step, one VAE
//    decode with all its tiles, one text encoding) replays the call: the i-th allocation
//    takes the i-th planned slot and a release does nothing, so the pass calls neither
//    malloc nor mmap for activations, and after the first pass touches no new pages.
//    `close()` unmaps it at the end of the phase.
// 4. Optionally (`idlePageEvents`, the UNet's arena) pages that the plan leaves unused for
//    long stretches are returned to the system when they fall idle (MADV_DONTNEED) and
//    come back zero-filled on next use, so the arena is resident only where it is busy
//    (`ActivationPlanner.idlePages`).
//
// A pass whose allocations differ from the plan (another size at some index, or more of
// them) takes plain allocations from there to its end and counts them (`fallbacks`): a
// planning bug costs memory, never correctness. Outside `run` (tests, `pocketsd bench`)
// every Tensor is a plain allocation.

/// What a Tensor asks for its buffer on the thread where a source is installed.
class ActivationSource {
    /// A buffer of `bytes` and its index in this source's sequence, or nil for a plain
    /// allocation (which the Tensor then frees itself).
    func allocate(_ bytes: Int) -> (pointer: UnsafeMutableRawPointer, slot: Int)? { nil }
    /// The tensor that got `slot` is gone.
    func release(slot: Int) {}
}

/// The source installed on the current thread (thread-local, so model calls on other
/// threads keep plain allocations).
enum ActivationContext {
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        // Not inside precondition: -Ounchecked does not evaluate its condition.
        let status = pthread_key_create(&key, nil)
        if status != 0 { fatalError("pthread_key_create: \(status)") }
        return key
    }()

    static var current: ActivationSource? {
        guard let raw = pthread_getspecific(key) else { return nil }
        return Unmanaged<ActivationSource>.fromOpaque(raw).takeUnretainedValue()
    }

    /// Runs `body` with `source` serving this thread's Tensor allocations.
    static func with<R>(_ source: ActivationSource, _ body: () throws -> R) rethrows -> R {
        let previous = pthread_getspecific(key)
        pthread_setspecific(key, Unmanaged.passUnretained(source).toOpaque())
        defer { pthread_setspecific(key, previous) }
        return try withExtendedLifetime(source) { try body() }
    }
}

/// Buffers outside an arena: malloc for small ones; mapped straight from the system from
/// 256 KiB up (glibc raises its mmap threshold after the first large free and would then
/// keep freed activations in its heap).
enum PlainActivations {
    static let mapThresholdBytes = 256 << 10

    static func allocate(_ bytes: Int) -> UnsafeMutableRawPointer {
        if bytes < mapThresholdBytes {
            return UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        }
        return mapAnonymous(bytes, what: "activation buffer")
    }

    static func free(_ p: UnsafeMutableRawPointer, bytes: Int) {
        if bytes < mapThresholdBytes { p.deallocate() } else { munmap(p, bytes) }
    }
}

func mapAnonymous(_ bytes: Int, what: String, noReserve: Bool = false) -> UnsafeMutableRawPointer {
    let flags = MAP_PRIVATE | MAP_ANONYMOUS | (noReserve ? MAP_NORESERVE : 0)
    guard let p = mmap(nil, max(bytes, 1), PROT_READ | PROT_WRITE, flags, -1, 0), p != MAP_FAILED else {
        fatalError("out of memory mapping a \(bytes)-byte \(what)")
    }
    return p
}

// MARK: - Planning

/// The offset planner: lifetimes in, one arena layout out.
public enum ActivationPlanner {
    /// Offsets and sizes in the arena are multiples of this (a cache line, and the widest
    /// vector the kernels load).
    public static let alignment = 64

    /// One buffer's size and lifetime: live from event `first` to event `last`, inclusive.
    /// Two buffers may share bytes only when their lifetimes are disjoint.
    public struct Interval: Sendable, Equatable {
        /// The buffer's size in bytes.
        public var bytes: Int
        /// The event at which the buffer is allocated.
        public var first: Int
        /// The last event at which the buffer is live (inclusive).
        public var last: Int

        /// An interval of `bytes` bytes live from event `first` to `last`; needs `first <= last`.
        public init(bytes: Int, first: Int, last: Int) {
            precondition(bytes >= 0 && first <= last, "interval \(first)...\(last) of \(bytes) bytes")
            self.bytes = bytes
            self.first = first
            self.last = last
        }

        func overlaps(_ other: Interval) -> Bool { first <= other.last && other.first <= last }
    }

    /// Where a set of intervals is placed in one arena: offsets, arena size and peak live bytes.
    public struct Layout: Sendable, Equatable {
        /// Byte offset of each interval in the arena (multiples of `alignment`).
        public var offsets: [Int]
        /// The arena's size: the end of the highest placed buffer.
        public var arenaBytes: Int
        /// The most (aligned) bytes live at one event: no layout can be smaller.
        public var peakLiveBytes: Int
    }

    /// `bytes` rounded up to `alignment` (at least one unit, so every buffer has an address
    /// of its own).
    public static func alignedSize(_ bytes: Int) -> Int {
        (max(bytes, 1) + alignment - 1) / alignment * alignment
    }

    /// Greedy by size: the largest buffers first (ties: earlier first), each at the lowest
    /// offset where it overlaps no already placed buffer whose lifetime meets its own.
    public static func layout(_ intervals: [Interval]) -> Layout {
        let sizes = intervals.map { alignedSize($0.bytes) }
        let order = intervals.indices.sorted {
            sizes[$0] != sizes[$1] ? sizes[$0] > sizes[$1]
                : intervals[$0].first != intervals[$1].first ? intervals[$0].first < intervals[$1].first : $0 < $1
        }
        var offsets = [Int](repeating: 0, count: intervals.count)
        var placed: [Int] = []  // indices of placed buffers, by offset
        var arenaBytes = 0
        for i in order {
            let size = sizes[i], interval = intervals[i]
            var offset = 0
            // placed is sorted by offset: walk the buffers that are live at the same time,
            // and stop at the first gap below one of them that fits.
            for j in placed where intervals[j].overlaps(interval) {
                if offsets[j] >= offset + size { break }
                offset = max(offset, offsets[j] + sizes[j])
            }
            offsets[i] = offset
            var lo = 0, hi = placed.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if offsets[placed[mid]] <= offset { lo = mid + 1 } else { hi = mid }
            }
            placed.insert(i, at: lo)
            arenaBytes = max(arenaBytes, offset + size)
        }
        return Layout(offsets: offsets, arenaBytes: arenaBytes, peakLiveBytes: peakLive(intervals, sizes: sizes))
    }

    /// Pages of an arena laid out by `offsets` that no tensor uses for more than
    /// `idleEvents` events, to return to the system (MADV_DONTNEED) when they fall idle:
    /// `(event, pages)` sorted by event, where `event` is the release that leaves the pages
    /// unused. The pass is taken as repeating (pages unused from the end of one pass into
    /// the next count as one gap). A page is only listed while no live tensor touches any
    /// byte of it, so releasing it never loses data.
    public static func idlePages(_ intervals: [Interval], offsets: [Int], idleEvents: Int,
                                 pageBytes: Int) -> [(event: Int, pages: Range<Int>)] {
        guard !intervals.isEmpty else { return [] }
        let events = (intervals.map(\.last).max() ?? 0) + 1  // one pass
        // Each tensor's pages; the arena cut into segments at every tensor's first and
        // last page, so a segment's pages are touched by the same tensors.
        let pages = intervals.indices.map { i -> Range<Int> in
            let start = offsets[i] / pageBytes
            return start..<((offsets[i] + alignedSize(intervals[i].bytes) + pageBytes - 1) / pageBytes)
        }
        let bounds = Array(Set(pages.flatMap { [$0.lowerBound, $0.upperBound] })).sorted()
        var segmentIndex: [Int: Int] = [:]
        for (j, b) in bounds.enumerated() { segmentIndex[b] = j }
        var users = [[(first: Int, last: Int)]](repeating: [], count: max(bounds.count - 1, 0))
        for (i, r) in pages.enumerated() {
            for j in segmentIndex[r.lowerBound]!..<segmentIndex[r.upperBound]! {
                users[j].append((intervals[i].first, intervals[i].last))
            }
        }
        var releases: [(event: Int, pages: Range<Int>)] = []
        for (j, list) in users.enumerated() where !list.isEmpty {
            // Busy periods: the union of the lifetimes of the tensors on these pages.
            var busy: [(first: Int, last: Int)] = []
            for u in list.sorted(by: { $0.first < $1.first }) {
                if let b = busy.last, u.first <= b.last { busy[busy.count - 1].last = max(b.last, u.last) } else { busy.append(u) }
            }
            for (k, b) in busy.enumerated() {
                let next = k + 1 < busy.count ? busy[k + 1].first : busy[0].first + events
                if next - b.last - 1 > idleEvents { releases.append((b.last, bounds[j]..<bounds[j + 1])) }
            }
        }
        // By event, adjacent pages merged.
        releases.sort { $0.event != $1.event ? $0.event < $1.event : $0.pages.lowerBound < $1.pages.lowerBound }
        var merged: [(event: Int, pages: Range<Int>)] = []
        for r in releases {
            if let m = merged.last, m.event == r.event, m.pages.upperBound == r.pages.lowerBound {
                merged[merged.count - 1].pages = m.pages.lowerBound..<r.pages.upperBound
            } else {
                merged.append(r)
            }
        }
        return merged
    }

    /// The largest sum of sizes live at one event.
    static func peakLive(_ intervals: [Interval], sizes: [Int]) -> Int {
        // +size at `first`, −size after `last`; at equal times the ends go first.
        var events: [(time: Int, delta: Int)] = []
        events.reserveCapacity(2 * intervals.count)
        for (interval, size) in zip(intervals, sizes) {
            events.append((interval.first, size))
            events.append((interval.last + 1, -size))
        }
        events.sort { $0.time != $1.time ? $0.time < $1.time : $0.delta < $1.delta }
        var live = 0, peak = 0
        for e in events {
            live += e.delta
            peak = max(peak, live)
        }
        return peak
    }
}

/// Every Tensor allocation of one model call, in order, with its place in an arena.
public struct ActivationPlan: Sendable {
    /// The i-th allocation's size (bytes asked for) and lifetime (in events: allocations
    /// and releases, counted from 0).
    public let intervals: [ActivationPlanner.Interval]
    /// Bytes asked for by the i-th allocation.
    public let sizes: [Int]
    /// Where the i-th allocation lives in the arena.
    public let offsets: [Int]
    /// The arena's size in bytes.
    public let arenaBytes: Int
    /// The most bytes live at once (aligned): `arenaBytes − peakLiveBytes` is what the
    /// layout loses to fragmentation.
    public let peakLiveBytes: Int
    /// Tensors still alive when the planned call returned (0 for every model call: a
    /// tensor that outlives its pass would be overwritten by the next one, so passes after
    /// such a leak fall back to plain allocations).
    public let escaped: Int

    /// Lays out `intervals` in one arena; `escaped` counts tensors left alive at the end of the pass.
    public init(intervals: [ActivationPlanner.Interval], escaped: Int = 0) {
        let layout = ActivationPlanner.layout(intervals)
        self.intervals = intervals
        sizes = intervals.map(\.bytes)
        offsets = layout.offsets
        arenaBytes = layout.arenaBytes
        peakLiveBytes = layout.peakLiveBytes
        self.escaped = escaped
    }

    /// The number of allocations in the plan.
    public var count: Int { sizes.count }
}

/// Records a planning pass: sizes, and each allocation's and release's place in the
/// sequence of events. Every tensor gets the same scratch (values do not matter while
/// the kernels are skipped; scalar loops only need addresses they may touch).
final class PlanRecorder: ActivationSource {
    private(set) var intervals: [ActivationPlanner.Interval] = []
    private var open: [Bool] = []
    private var clock = 0
    private var scratch: [(pointer: UnsafeMutableRawPointer, bytes: Int)] = []

    override func allocate(_ bytes: Int) -> (pointer: UnsafeMutableRawPointer, slot: Int)? {
        if bytes > (scratch.last?.bytes ?? 0) {
            // Earlier tensors may still point into the old scratch: keep it until the end.
            let size = max(bytes, 2 * (scratch.last?.bytes ?? 0), 1 << 20)
            scratch.append((mapAnonymous(size, what: "planning scratch", noReserve: true), size))
        }
        intervals.append(ActivationPlanner.Interval(bytes: bytes, first: clock, last: clock))
        open.append(true)
        clock += 1
        return (scratch.last!.pointer, intervals.count - 1)
    }

    override func release(slot: Int) {
        intervals[slot].last = clock
        open[slot] = false
        clock += 1
    }

    /// The plan of what was recorded; tensors still alive count as live to the end.
    func finish() -> ActivationPlan {
        var escaped = 0
        for i in intervals.indices where open[i] {
            intervals[i].last = clock
            escaped += 1
        }
        return ActivationPlan(intervals: intervals, escaped: escaped)
    }

    deinit {
        for s in scratch { munmap(s.pointer, s.bytes) }
    }
}

// MARK: - Replay

/// One phase's activation memory: a single mapping laid out by an `ActivationPlan`, used
/// by every pass of the planned call (every UNet step, every image's VAE decode).
///
/// Not thread-safe: one thread runs the passes (the kernels' worker threads never
/// allocate tensors). Planning sets `Kernels.isPlanning`, which is process-wide: no other
/// model work may run while a plan is recorded.
public final class ActivationArena {
    /// The recorded plan the arena replays.
    public let plan: ActivationPlan
    private let replayer: ArenaReplayer

    /// Records the allocations of `body` (a model call, run with the kernels skipped and
    /// weight residency left alone) and lays them out. Whatever `body` computes is garbage.
    public static func plan(_ body: () throws -> Void) rethrows -> ActivationPlan {
        let recorder = PlanRecorder()
        let wasPlanning = Kernels.isPlanning
        Kernels.isPlanning = true
        defer { Kernels.isPlanning = wasPlanning }
        try ActivationContext.with(recorder) { try body() }
        return recorder.finish()
    }

    /// Maps the arena (pages come in on first touch, during the first pass). With
    /// `idlePageEvents`, pages that no tensor will use for more than that many events
    /// (allocations and releases) are returned to the system as they fall idle and come
    /// back zero-filled on their next use: the arena then stays resident only where it is
    /// busy, at the cost of those page faults. nil keeps every page for the whole phase.
    public init(plan: ActivationPlan, idlePageEvents: Int? = nil) {
        self.plan = plan
        replayer = ArenaReplayer(plan: plan, idlePageEvents: idlePageEvents)
    }

    /// Runs one pass of the planned call with its tensors in the arena.
    public func run<R>(_ body: () throws -> R) rethrows -> R {
        replayer.beginPass()
        defer { replayer.endPass() }
        return try ActivationContext.with(replayer) { try body() }
    }

    /// Unmaps the arena (call at the end of the phase). Later passes use plain allocations.
    public func close() { replayer.close() }

    /// Passes run so far.
    public var passes: Int { replayer.passes }
    /// Allocations that did not follow the plan and took a plain buffer instead (0 unless
    /// the planned call and the real one differ: tests assert it).
    public var fallbacks: Int { replayer.fallbacks }
    /// Passes whose allocations left the plan (different size or count, or tensors left
    /// alive by an earlier pass).
    public var divergedPasses: Int { replayer.divergedPasses }

    /// Bytes returned to the system per pass (idle pages; see `init`).
    public var idleBytesPerPass: Int { replayer.idleBytesPerPass }

    /// The arena's figures so far, for `--stats`.
    public var report: ActivationReport {
        ActivationReport(arenaBytes: plan.arenaBytes, peakLiveBytes: plan.peakLiveBytes, allocations: plan.count,
                         passes: passes, fallbacks: fallbacks, divergedPasses: divergedPasses,
                         idleBytesPerPass: idleBytesPerPass)
    }
}

/// A phase's activation figures, for `--stats`.
public struct ActivationReport: Sendable, Equatable {
    /// The planned arena.
    public var arenaBytes: Int
    /// The most bytes live at once in the plan (the arena's lower bound).
    public var peakLiveBytes: Int
    /// Tensor allocations per pass.
    public var allocations: Int
    /// Passes run with the arena.
    public var passes: Int
    /// Allocations that left the plan and took a plain buffer instead.
    public var fallbacks: Int
    /// Passes whose allocations left the plan.
    public var divergedPasses: Int
    /// Idle arena pages returned to the system per pass (0 when the arena keeps them).
    public var idleBytesPerPass: Int

    /// A report with the given figures (bytes and counts as named).
    public init(arenaBytes: Int, peakLiveBytes: Int, allocations: Int, passes: Int, fallbacks: Int, divergedPasses: Int,
                idleBytesPerPass: Int = 0) {
        self.arenaBytes = arenaBytes
        self.peakLiveBytes = peakLiveBytes
        self.allocations = allocations
        self.passes = passes
        self.fallbacks = fallbacks
        self.divergedPasses = divergedPasses
        self.idleBytesPerPass = idleBytesPerPass
    }
}

final class ArenaReplayer: ActivationSource {
    let sizes: [Int]
    let offsets: [Int]
    private var base: UnsafeMutableRawPointer?
    private let mappedBytes: Int
    private let pageBytes: Int
    /// Idle pages to drop, by the release event after which they are unused.
    private let idle: [(event: Int, pages: Range<Int>)]
    let idleBytesPerPass: Int
    private var next = 0
    /// Events (allocations and releases) so far in this pass, counted as the recorder did.
    private var clock = 0
    private var idleCursor = 0
    private var diverged = false
    private var inPass = false
    /// Arena tensors not yet released (they must all be gone before the next pass reuses
    /// their bytes, and before the arena is unmapped).
    private var live = 0
    private(set) var passes = 0
    private(set) var fallbacks = 0
    private(set) var divergedPasses = 0

    init(plan: ActivationPlan, idlePageEvents: Int?) {
        sizes = plan.sizes
        offsets = plan.offsets
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        pageBytes = page
        mappedBytes = (plan.arenaBytes + page - 1) / page * page
        base = plan.arenaBytes > 0 ? mapAnonymous(mappedBytes, what: "activation arena") : nil
        // (Not when the planned call leaves tensors alive: those die outside any pass.)
        idle = plan.escaped > 0 ? [] : idlePageEvents.map {
            ActivationPlanner.idlePages(plan.intervals, offsets: plan.offsets, idleEvents: $0, pageBytes: page)
        } ?? []
        idleBytesPerPass = idle.reduce(0) { $0 + $1.pages.count } * page
    }

    func beginPass() {
        next = 0
        clock = 0
        idleCursor = 0
        inPass = true
        // A tensor left from the last pass still owns its bytes: this pass must not reuse
        // them.
        diverged = live > 0 || base == nil && !sizes.isEmpty
        if diverged { divergedPasses += 1 }
    }

    func endPass() {
        if !diverged && next != sizes.count { divergedPasses += 1 }
        passes += 1
        inPass = false
    }

    override func allocate(_ bytes: Int) -> (pointer: UnsafeMutableRawPointer, slot: Int)? {
        if !diverged, next < sizes.count, sizes[next] == bytes, let base {
            defer { next += 1 }
            live += 1
            clock += 1
            return (base + offsets[next], next)
        }
        if !diverged {
            diverged = true
            divergedPasses += 1
        }
        fallbacks += 1
        return nil
    }

    override func release(slot: Int) {
        live -= 1
        let event = clock
        clock += 1
        // Off the plan, events no longer match it: keep every page.
        guard inPass, !diverged, let base else { return }
        while idleCursor < idle.count && idle[idleCursor].event <= event {
            let r = idle[idleCursor]
            if r.event == event {
                madvise(base + r.pages.lowerBound * pageBytes, r.pages.count * pageBytes, MADV_DONTNEED)
            }
            idleCursor += 1
        }
    }

    func close() {
        guard let p = base else { return }
        base = nil
        // A tensor still alive keeps the mapping (a leak, not a dangling pointer).
        if live == 0 { munmap(p, mappedBytes) }
    }

    deinit { close() }
}
