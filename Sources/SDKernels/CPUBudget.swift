import CKernels
import Glibc

/// How many CPUs this process may keep busy: the default thread count of the pools
/// (`--threads`). The online CPU count alone oversubscribes a process confined to fewer:
/// by an affinity mask (`taskset`, a cpuset) or by a cgroup CPU quota (`docker run
/// --cpus 2` on a large host, a systemd `CPUQuota=`), where a thread per host CPU would
/// share the allowed time and every product would wait on its slowest, descheduled part.
enum CPUBudget {
    /// min(online CPUs, CPUs in the affinity mask, the cgroup quota rounded up), at least 1.
    static var threads: Int {
        let affinity = Int(pd_affinity_cpu_count())
        return threads(online: Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), affinity: affinity > 0 ? affinity : nil,
                       quota: cgroupQuota())
    }

    static func threads(online: Int, affinity: Int?, quota: Double?) -> Int {
        var n = max(1, online)
        if let affinity { n = min(n, affinity) }
        if let quota, quota > 0 { n = min(n, Int(quota.rounded(.up))) }
        return max(1, n)
    }

    /// CPUs' worth of time per period from a cgroup v2 `cpu.max` ("QUOTA PERIOD", or "max
    /// PERIOD" for none).
    static func quota(cpuMax: String) -> Double? {
        let fields = cpuMax.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard fields.count == 2, let quota = Double(fields[0]), let period = Double(fields[1]),
              quota > 0, period > 0 else { return nil }
        return quota / period
    }

    /// The same from cgroup v1's `cpu.cfs_quota_us` and `cpu.cfs_period_us` (quota −1: none).
    static func quota(cfsQuota: String, period: String) -> Double? {
        quota(cpuMax: cfsQuota.split(separator: "\n").first.map(String.init).map { $0 + " " + period } ?? "")
    }

    /// The tightest CPU quota on this process's cgroup and its ancestors, from
    /// `/proc/self/cgroup` (`cgroupList`) and the hierarchy mounted at `root`; nil when none
    /// is set or nothing can be read.
    static func cgroupQuota(root: String = "/sys/fs/cgroup",
                            cgroupList: String? = readSmallFile("/proc/self/cgroup")) -> Double? {
        guard let cgroupList else { return nil }
        var tightest: Double?
        func consider(_ q: Double?) {
            if let q { tightest = min(tightest ?? q, q) }
        }
        for line in cgroupList.split(separator: "\n") {
            // "ID:CONTROLLERS:PATH"; v2 is "0::PATH", v1's CPU line names the cpu controller.
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            let path = String(fields[2])
            if fields[0] == "0" && fields[1].isEmpty {
                for dir in ancestors(path) { consider(readSmallFile(root + dir + "/cpu.max").flatMap { quota(cpuMax: $0) }) }
            } else if fields[1].split(separator: ",").contains("cpu") {
                // Mounted as cpu or cpu,cpuacct; inside a container the path may not exist
                // below the mount, whose own files are then the container's.
                for mount in ["/cpu", "/cpu,cpuacct"] {
                    for dir in ancestors(path) {
                        let base = root + mount + dir
                        if let q = readSmallFile(base + "/cpu.cfs_quota_us"), let p = readSmallFile(base + "/cpu.cfs_period_us") {
                            consider(quota(cfsQuota: q, period: p))
                        }
                    }
                }
            }
        }
        return tightest
    }

    /// "/a/b" → ["/a/b", "/a", ""] (the root as "", so that root + dir + "/file" reads well).
    static func ancestors(_ path: String) -> [String] {
        var parts = path.split(separator: "/").map(String.init)
        var result: [String] = []
        while true {
            result.append(parts.isEmpty ? "" : "/" + parts.joined(separator: "/"))
            if parts.isEmpty { return result }
            parts.removeLast()
        }
    }

    /// A small text file (≤ 64 KiB) whole, or nil.
    static func readSmallFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 65536)
        var count = 0
        while count < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + count, $0.count - count) }
            if n <= 0 { break }
            count += n
        }
        return String(decoding: bytes[..<count], as: UTF8.self)
    }
}
