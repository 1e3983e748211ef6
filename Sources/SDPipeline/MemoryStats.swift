import Glibc

/// Resident memory of this process as Linux reports it in /proc/self/status.
public struct MemoryStats: Sendable, Equatable {
    /// Peak resident set (VmHWM), bytes.
    public var peakResident: Int
    /// Current resident set split into anonymous (heap, stacks) and file-backed (mapped
    /// weights) pages, bytes.
    public var residentAnonymous: Int
    public var residentFile: Int

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

    /// Resets the peak (VmHWM) to the current resident size, so each phase can report its
    /// own peak. Needs Linux ≥ 4.0; harmless where it fails.
    public static func resetPeak() {
        guard let fp = fopen("/proc/self/clear_refs", "w") else { return }
        fputs("5", fp)
        fclose(fp)
    }
}
