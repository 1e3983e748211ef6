import Glibc

/// Small output files (images, latents) written under a temporary name and renamed into
/// place only when complete, so a failure never leaves a half-written file.
public enum AtomicFile {
    /// Calls `body` with a stream to the temporary file; `body` returns false on failure.
    public static func write(_ path: String, _ body: (UnsafeMutablePointer<FILE>) -> Bool) throws {
        let temporary = path + ".partial-\(getpid())"
        ProcessSignals.register(temporary)  // removed on SIGINT/SIGTERM until renamed
        defer { ProcessSignals.unregister(temporary) }
        guard let fp = fopen(temporary, "wb") else { throw FormatError(path, MappedFile.errnoText("cannot create file")) }
        let written = body(fp)
        let closed = fclose(fp) == 0
        guard written, closed, rename(temporary, path) == 0 else {
            unlink(temporary)
            throw FormatError(path, "cannot write file (disk full or not writable?)")
        }
    }

    /// Writes `bytes` to `path` atomically; throws `FormatError` on failure.
    public static func write(_ path: String, bytes: [UInt8]) throws {
        try write(path) { fp in bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, fp) } == bytes.count }
    }
}
