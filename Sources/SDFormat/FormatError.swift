/// An error in a file the user gave us: one line naming the file and the problem.
public struct FormatError: Error, CustomStringConvertible, Equatable {
    /// The file the error is about.
    public let path: String
    /// What is wrong with it.
    public let message: String

    /// An error about the file at `path`.
    public init(_ path: String, _ message: String) {
        self.path = path
        self.message = message
    }

    /// "path: message".
    public var description: String { "\(path): \(message)" }
}
