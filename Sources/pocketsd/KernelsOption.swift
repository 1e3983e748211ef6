import ArgumentParser
import Glibc
import SDKernels

extension KernelVariant {
    /// The help text of `--kernels`, shared by generate and bench.
    static let help = "Kernel variant: auto (the widest this CPU runs), portable (Swift SIMD), avx2, avx512, avx512-bf16 or amx (bf16 products on AMX tiles); default: auto, or $\(environmentVariable)."

    /// `--kernels`' value as a variant, or a one-line usage error (unknown name, or one
    /// this CPU cannot run).
    static func parseOption(_ text: String) throws -> KernelVariant {
        do {
            return try parse(text)
        } catch {
            throw ValidationError("--kernels: \(error)")
        }
    }

    /// The CPU's "model name" from /proc/cpuinfo, for benchmark reports (nil if unreadable).
    static var cpuModelName: String? {
        guard let f = fopen("/proc/cpuinfo", "r") else { return nil }
        defer { fclose(f) }
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, f) > 0 {
            let text = String(cString: line!)
            if text.hasPrefix("model name"), let colon = text.firstIndex(of: ":") {
                return String(text[text.index(after: colon)...]).trimmingCharacters(in: " \t\n")
            }
        }
        return nil
    }
}

private extension String {
    func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let c = s.first, set.contains(c) { s.removeFirst() }
        while let c = s.last, set.contains(c) { s.removeLast() }
        return String(s)
    }
}
