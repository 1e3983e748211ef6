/// A config the models cannot run, or an input they cannot take: one line naming the
/// component and the problem. Weight problems are `FormatError`s from SDFormat.
public struct ModelError: Error, CustomStringConvertible, Equatable {
    /// "unet", "vae", "text_encoder".
    public let component: String
    public let message: String

    public init(_ component: String, _ message: String) {
        self.component = component
        self.message = message
    }

    public var description: String { "\(component): \(message)" }
}
