import Glibc

/// A whole file mapped read-only. Pages are loaded on first touch and can be dropped
/// again with `release(_:)`, which is how weights stream through a small memory.
public final class MappedFile: @unchecked Sendable {
    /// The path the file was opened at.
    public let path: String
    /// The file's size in bytes.
    public let byteCount: Int
    /// The start of the read-only mapping.
    public let base: UnsafeRawPointer

    /// Maps the regular, non-empty file at `path` read-only; throws `FormatError`.
    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw FormatError(path, MappedFile.errnoText("cannot open")) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw FormatError(path, MappedFile.errnoText("cannot stat")) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw FormatError(path, "not a regular file") }
        byteCount = Int(st.st_size)
        guard byteCount > 0 else { throw FormatError(path, "file is empty") }
        guard let p = mmap(nil, byteCount, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw FormatError(path, MappedFile.errnoText("cannot map"))
        }
        base = UnsafeRawPointer(p)
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: base), byteCount) }

    /// "what: strerror(errno)", for error messages.
    public static func errnoText(_ what: String) -> String {
        "\(what): \(String(cString: strerror(errno)))"
    }

    /// The whole mapping as a buffer.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: byteCount) }

    /// Hints how a byte range will be used; ranges are widened to whole pages.
    public func advise(_ range: Range<Int>, _ advice: Int32) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let lo = range.lowerBound / page * page
        let hi = min(byteCount, (range.upperBound + page - 1) / page * page)
        guard lo < hi else { return }
        madvise(UnsafeMutableRawPointer(mutating: base + lo), hi - lo, advice)
    }

    /// Drops the resident pages of a range; they are read again from the file if touched.
    public func release(_ range: Range<Int>) { advise(range, MADV_DONTNEED) }

    /// Asks the kernel to read a range ahead of use.
    public func prefetch(_ range: Range<Int>) { advise(range, MADV_WILLNEED) }
}
