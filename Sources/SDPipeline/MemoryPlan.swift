import Glibc
import SDKernels
import SDModels

/// `--memory`: what happens to weight pages after use (DESIGN §5, docs/MEMORY.md).
public enum MemoryPolicy: String, Sendable, CaseIterable {
    /// Pages stay mapped until their component is done: fastest when RAM is plentiful.
    case keep
    /// Each module's pages are dropped after it runs and the next module's read ahead:
    /// resident weights stay near one module's.
    case stream
    /// `keep` when the machine has room for the whole model file and headroom, else `stream`.
    case auto

    /// What `keep` needs beyond the model file: activations (≈ 700 MiB for `keep`'s
    /// untiled VAE decode at 512², ≈ 150 MiB for the UNet) and slack for the rest.
    public static let keepHeadroomBytes = 1 << 30

    /// The policy `auto` resolves to: a pure function of the memory on offer and the model
    /// file's size. The memory on offer is the smaller of MemAvailable and the cgroup
    /// limit (the page cache counts against a cgroup, so a limit below the file size means
    /// the file cannot stay resident however it is read). Unknown figures count as ample.
    public static func automatic(memAvailable: Int?, cgroupLimit: Int?, modelFileBytes: Int) -> MemoryPolicy {
        let available = min(memAvailable ?? .max, cgroupLimit ?? .max)
        let (needed, overflow) = modelFileBytes.addingReportingOverflow(keepHeadroomBytes)
        return !overflow && available >= needed ? .keep : .stream
    }
}

/// How one run spends memory: the resolved policy and the activation settings. Every
/// setting gives the same images (see `MemoryOptions`), except VAE tiling, which is an
/// approximation bounded in the tests and the same for every policy.
public struct MemoryPlan: Sendable {
    /// `keep` or `stream` (never `auto`).
    public var policy: MemoryPolicy
    /// Why: the request, and for `auto` the figures it decided on.
    public var reason: String
    /// The UNet runs as many samples per call as fit in this many latent pixels (at least
    /// one): 4096 = one 512² sample, so a guided 512² image's two halves run one after the
    /// other (halving the activations), while small images still go through together and
    /// share each pass over the weights (which `stream` reads again on every pass).
    public var unetBatchLatentPixels = 64 * 64
    /// See `MemoryOptions.chunkFloats`.
    public var chunkFloats: Int = MemoryOptions.defaultChunkFloats
    /// nil decodes every size in one piece. `keep` decodes up to 512² whole (tiles cost
    /// time: 16 overlapping 160 px tiles make SD 1.5's 512² decode ≈ 1.6× slower), `stream`
    /// in small tiles (memory bounded at any size).
    public var vaeTiling: VAETiling?
    /// Each phase's tensors live in one preplanned arena (`ActivationArena`): every
    /// buffer's size and lifetime are recorded before the phase starts, so its steps make
    /// no allocations for activations. false gives every tensor a plain allocation instead
    /// (the same numbers: for comparison in tests).
    public var planActivations = true
    /// The UNet arena returns pages that no tensor uses for more than this many events
    /// (tensor allocations and releases; nil: never). Its U shape leaves the first level's
    /// buffers idle from the down path until the last up block, right while the deepest
    /// layers bring in the largest weights and kernel scratch: SD 1.5 at 512² keeps 49 MiB
    /// of arena but has 29 MiB live at its memory peak (`up_blocks.1`). With 96 the pages
    /// resident there exceed the live tensors by ≈ 1 MiB instead of ≈ 20 MiB, for ≈ 57 MiB
    /// of zero-filled pages per step (3.8 % of what fresh buffers for every tensor cost).
    /// The VAE keeps its arena whole: its tiles reuse every page within ≈ 150 events, and
    /// its activation peak is its memory peak.
    public var unetIdlePageEvents: Int? = 96
    /// The UNet's and VAE's kernel scratch: `roomy` under `keep` (larger Winograd blocks,
    /// fewer repeated weight transforms: up to 24 MiB more for SD 1.5 at 512²), `compact`
    /// under `stream`, whose figures it would otherwise raise. Same images either way.
    public var kernelScratch: ScratchPolicy

    /// UNet samples per call for a latent of `latentPixels` (h·w).
    public func unetBatch(latentPixels: Int) -> Int { max(1, unetBatchLatentPixels / max(1, latentPixels)) }

    /// A plan for a resolved `policy` (not `.auto`), with `reason` saying why it was chosen.
    public init(policy: MemoryPolicy, reason: String) {
        precondition(policy != .auto, "resolve auto first")
        self.policy = policy
        self.reason = reason
        vaeTiling = policy == .keep ? .large : .standard
        kernelScratch = policy == .keep ? .roomy : .compact
    }

    /// Resolves `auto` against this machine.
    public static func resolve(_ requested: MemoryPolicy, modelFileBytes: Int) -> MemoryPlan {
        guard requested == .auto else { return MemoryPlan(policy: requested, reason: "requested") }
        let available = MachineMemory.available(), limit = MachineMemory.cgroupLimit()
        let policy = MemoryPolicy.automatic(memAvailable: available, cgroupLimit: limit, modelFileBytes: modelFileBytes)
        func mib(_ v: Int?) -> String { v.map { "\($0 >> 20) MiB" } ?? "unknown" }
        return MemoryPlan(policy: policy, reason: "auto: MemAvailable \(mib(available)), cgroup limit "
                          + "\(limit == nil ? "none" : mib(limit)), model file \(mib(modelFileBytes))")
    }
}

/// What Linux says about memory on offer.
public enum MachineMemory {
    /// MemAvailable from /proc/meminfo, bytes.
    public static func available() -> Int? {
        guard let text = readSmallFile("/proc/meminfo") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
            return Int(line.filter(\.isNumber)).map { $0 * 1024 }
        }
        return nil
    }

    /// The tightest memory limit on this process's cgroup and its ancestors: cgroup v2
    /// memory.max, or v1 memory.limit_in_bytes; nil when there is none (or no cgroup fs).
    public static func cgroupLimit() -> Int? {
        guard let text = readSmallFile("/proc/self/cgroup") else { return nil }
        var limits: [Int] = []
        for line in text.split(separator: "\n") {
            // "0::/user.slice/…" (v2) or "4:memory:/docker/…" (v1).
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            let path = String(fields[2])
            if fields[1].isEmpty {
                limits += limitsUpward(root: "/sys/fs/cgroup", path: path, file: "memory.max")
                limits += limitsUpward(root: "/sys/fs/cgroup/unified", path: path, file: "memory.max")
            } else if fields[1].split(separator: ",").contains("memory") {
                limits += limitsUpward(root: "/sys/fs/cgroup/memory", path: path, file: "memory.limit_in_bytes")
            }
        }
        return limits.min()
    }

    /// Limits in `file` from the cgroup at `path` up to the root; "max" and v1's huge
    /// "unlimited" values are no limit.
    static func limitsUpward(root: String, path: String, file: String) -> [Int] {
        var result: [Int] = []
        var parts = path.split(separator: "/").map(String.init)
        while true {
            let dir = ([root] + parts).joined(separator: "/")
            if let text = readSmallFile(dir + "/" + file),
               let value = Int(text.filter { !$0.isWhitespace }), value > 0, value < (1 << 60) {
                result.append(value)
            }
            if parts.isEmpty { break }
            parts.removeLast()
        }
        return result
    }

    /// A /proc or /sys file (they report size 0, so read until EOF).
    static func readSmallFile(_ path: String) -> String? {
        guard let fp = fopen(path, "r") else { return nil }
        defer { fclose(fp) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&buffer, 1, buffer.count, fp)
            if n <= 0 { break }
            bytes += buffer[0..<n]
            if bytes.count > 1 << 20 { break }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
