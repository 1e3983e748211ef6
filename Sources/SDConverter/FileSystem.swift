import Glibc
import SDFormat

/// The few file-system queries the converter needs, without Foundation.
enum FileSystem {
    static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    static func isFile(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
    }

    static func exists(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0
    }

    /// A small text file (configs, vocabularies), read whole.
    static func readText(_ path: String) throws -> String {
        let file = try MappedFile(path: path)
        guard let text = String(validating: file.bytes, as: UTF8.self) else { throw FormatError(path, "not UTF-8 text") }
        return text
    }

    static func readJSON(_ path: String) throws -> JSON {
        let file = try MappedFile(path: path)
        do { return try JSON(parsing: file.bytes) } catch { throw FormatError(path, "\(error)") }
    }

    static func join(_ a: String, _ b: String) -> String { a.hasSuffix("/") ? a + b : a + "/" + b }
}
