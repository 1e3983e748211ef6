import Glibc
import SDFormat
import SDPipeline

/// Messages for people on stderr, a progress line that rewrites itself on a terminal,
/// and machine-readable output on stdout.
enum Terminal {
    static let stderrIsTerminal = isatty(STDERR_FILENO) != 0

    static func error(_ message: String) {
        let line = message.split(separator: "\n", omittingEmptySubsequences: true).first.map(String.init) ?? message
        writeStderr("pocketsd: error: \(line)\n")
    }

    static func info(_ message: String) { writeStderr(message + "\n") }

    static func writeStderr(_ s: String) {
        var s = s
        s.withUTF8 { _ = fwrite($0.baseAddress, 1, $0.count, stderr) }
        fflush(stderr)
    }

    static func warning(_ message: String) { writeStderr("pocketsd: warning: \(message)\n") }

    /// When the last plain progress line was written (stderr not a terminal). Set at the
    /// first report (a lazy static), so the first line comes a second into the work and
    /// quick commands log nothing but their result.
    nonisolated(unsafe) static var lastPlainProgress = now()

    /// One progress line per step: rewritten in place on a terminal; when stderr is a log
    /// or a pipe, plain lines, at most one a second (a log gets a heartbeat, not thousands
    /// of lines). An empty text clears the terminal line and is not logged.
    static func progress(_ text: String, final: Bool = false) {
        if stderrIsTerminal {
            writeStderr("\r\u{1B}[2K" + text + (final ? "\n" : ""))
            return
        }
        let t = now()
        guard !text.isEmpty, t - lastPlainProgress >= 1 else { return }
        lastPlainProgress = t
        writeStderr(text + "\n")
    }

    static func printJSON(_ value: JSON) { print(value.serialized) }
}

/// A monotonic clock in seconds.
func now() -> Double { monotonicSeconds() }

func formatBytes(_ n: Int) -> String {
    let v = Double(n)
    if v >= Double(1 << 30) { return format(v / Double(1 << 30), 2) + " GiB" }
    if v >= Double(1 << 20) { return format(v / Double(1 << 20), 1) + " MiB" }
    if v >= Double(1 << 10) { return format(v / Double(1 << 10), 1) + " KiB" }
    return "\(n) B"
}

func formatCount(_ n: Int) -> String {
    let v = Double(n)
    if v >= 1e9 { return format(v / 1e9, 2) + "G" }
    if v >= 1e6 { return format(v / 1e6, 1) + "M" }
    if v >= 1e3 { return format(v / 1e3, 1) + "K" }
    return "\(n)"
}

/// Fixed-point formatting without Foundation.
func format(_ v: Double, _ digits: Int) -> String {
    guard v.isFinite else { return "\(v)" }
    var buffer = [CChar](repeating: 0, count: 64)
    _ = withVaList([digits, v]) { vsnprintf(&buffer, 64, "%.*f", $0) }
    return String(cString: buffer)
}

func formatScientific(_ v: Double) -> String {
    var buffer = [CChar](repeating: 0, count: 64)
    _ = withVaList([v]) { vsnprintf(&buffer, 64, "%.2e", $0) }
    return String(cString: buffer)
}

func pad(_ s: String, _ width: Int, right: Bool = false) -> String {
    let fill = String(repeating: " ", count: max(0, width - s.count))
    return right ? fill + s : s + fill
}
