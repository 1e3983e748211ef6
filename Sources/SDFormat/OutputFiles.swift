import Glibc

/// Every output file of one run, checked before the run does any work and committed
/// together at its end.
///
/// `init` refuses, with the path in the message: an empty name or one ending in "/", a
/// missing folder, a folder where a file cannot be created (tried for real, so read-only
/// mounts, /proc and permissions are all caught), an output that is a folder, an output
/// that names an input of the run (same file by device and inode, or by resolved path),
/// and two outputs that name the same file. Each output is then written to a hidden
/// temporary file beside it (`.NAME.partial-PID`, removed on SIGINT/SIGTERM through
/// `ProcessSignals`), and `commit()` renames them all into place only after every one was
/// written: a failure in any output leaves none of them.
public final class OutputFiles {
    /// The run's output paths, as given.
    public let paths: [String]
    private var temporaries: [String: String] = [:]
    private var finished = false

    /// - Parameters:
    ///   - outputs: the files the run will write.
    ///   - inputs: files or folders the run reads; an output may not replace one of them,
    ///     nor an existing file inside an input folder.
    public init(outputs: [String], inputs: [String]) throws {
        paths = outputs
        var seen: [(path: String, resolved: String)] = []
        for path in outputs {
            try Self.check(path, inputs: inputs)
            let resolved = Self.resolvedOutputPath(path)
            if let other = seen.first(where: { $0.resolved == resolved }) {
                throw FormatError(path, other.path == path
                    ? "the run would write this file twice"
                    : "names the same file as the output \(other.path)")
            }
            seen.append((path, resolved))
        }
    }

    deinit { if !finished { abandon() } }

    /// Checks one output path (see the type's comment), including that a file can really be
    /// created in its folder.
    public static func check(_ path: String, inputs: [String] = []) throws {
        guard !path.isEmpty else { throw FormatError("(empty)", "the output file name is empty") }
        guard !path.hasSuffix("/") else { throw FormatError(path, "the output names a folder, not a file") }
        let dir = ModelFileWriter.split(path).dir
        var st = stat()
        guard stat(dir, &st) == 0 else { throw FormatError(path, "output folder \(dir) does not exist") }
        guard (st.st_mode & S_IFMT) == S_IFDIR else { throw FormatError(path, "output folder \(dir) does not exist (a file has that name)") }
        if stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR { throw FormatError(path, "output path is a folder") }
        for input in inputs where !input.isEmpty {
            if sameFile(path, input) { throw FormatError(path, "the output would replace the input \(input)") }
            var inputStat = stat()
            if stat(input, &inputStat) == 0, (inputStat.st_mode & S_IFMT) == S_IFDIR, access(path, F_OK) == 0,
               let folder = realPath(input), let file = realPath(path), file.hasPrefix(folder + "/") {
                throw FormatError(path, "the output would replace a file inside the input folder \(input)")
            }
        }
        // Permission bits do not tell (root ignores them; read-only mounts and /proc refuse
        // anyway): create and remove a probe file.
        let probe = temporaryPath(for: path) + "-probe"
        ProcessSignals.register(probe)
        defer { ProcessSignals.unregister(probe) }
        let fd = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            let reason = errno == EROFS || errno == EACCES || errno == EPERM || errno == ENOENT
                ? "output folder \(dir) is not writable" : MappedFile.errnoText("cannot create a file in \(dir)")
            throw FormatError(path, reason)
        }
        close(fd)
        unlink(probe)
    }

    /// The hidden temporary file an output is written to before it is renamed into place.
    public static func temporaryPath(for path: String) -> String {
        let (dir, name) = ModelFileWriter.split(path)
        return dir + "/." + name + ".partial-\(getpid())"
    }

    /// Writes output `path` (one of `paths`) to its temporary file: `body` returns false on
    /// failure. The file appears under its name only at `commit()`.
    public func write(_ path: String, _ body: (UnsafeMutablePointer<FILE>) -> Bool) throws {
        precondition(paths.contains(path), "write of \(path), which is not an output of the run")
        let temporary = Self.temporaryPath(for: path)
        ProcessSignals.register(temporary)
        temporaries[path] = temporary
        guard let fp = fopen(temporary, "wb") else { throw FormatError(path, MappedFile.errnoText("cannot create file")) }
        let written = body(fp)
        // fwrite and fclose set errno (ENOSPC, EFBIG, EIO): say which.
        let writeErrno = written ? 0 : errno
        let closed = fclose(fp) == 0
        guard written, closed else {
            let code = written ? errno : writeErrno
            let why = code == ENOSPC || code == EFBIG || code == EDQUOT
                ? "disk full or file too large (\(String(cString: strerror(code))))"
                : code != 0 ? String(cString: strerror(code)) : "write failed"
            throw FormatError(path, "cannot write file: \(why)")
        }
    }

    /// Writes `bytes` as output `path` (one of `paths`); it appears under its name only at `commit()`.
    public func write(_ path: String, bytes: [UInt8]) throws {
        try write(path) { fp in bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, fp) } == bytes.count }
    }

    /// Renames every written output into place. Outputs never written are an error.
    public func commit() throws {
        for path in paths where temporaries[path] == nil {
            throw FormatError(path, "internal error: output was never written")
        }
        for path in paths {
            let temporary = temporaries[path]!
            guard rename(temporary, path) == 0 else {
                let error = FormatError(path, MappedFile.errnoText("cannot move the finished file into place"))
                abandon()
                throw error
            }
            ProcessSignals.unregister(temporary)
            temporaries[path] = nil
        }
        finished = true
    }

    /// Removes every temporary file written so far.
    public func abandon() {
        for (_, temporary) in temporaries {
            unlink(temporary)
            ProcessSignals.unregister(temporary)
        }
        temporaries = [:]
        finished = true
    }

    /// The absolute path an output will have: its folder resolved, its name kept (the file
    /// itself may not exist yet, or be a symlink that rename would replace).
    static func resolvedOutputPath(_ path: String) -> String {
        let (dir, name) = ModelFileWriter.split(path)
        return (realPath(dir) ?? dir) + "/" + name
    }

    static func realPath(_ path: String) -> String? {
        guard let p = realpath(path, nil) else { return nil }
        defer { free(p) }
        return String(cString: p)
    }

    /// Whether two paths name the same existing file (device and inode, which sees through
    /// symlinks and hard links), or resolve to the same place.
    static func sameFile(_ a: String, _ b: String) -> Bool {
        var sa = stat(), sb = stat()
        if stat(a, &sa) == 0, stat(b, &sb) == 0 { return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino }
        return resolvedOutputPath(a) == resolvedOutputPath(b)
    }
}
