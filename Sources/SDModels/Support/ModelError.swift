/// A config the models cannot run, or an input they cannot take: one line naming the
/// component and the problem. Weight problems are `FormatError`s from SDFormat.
public struct ModelError: Error, CustomStringConvertible, Equatable {
    /// "unet", "vae", "text_encoder".
    public let component: String
    /// What is wrong.
    public let message: String

    /// An error in `component` ("unet", …) described by `message`.
    public init(_ component: String, _ message: String) {
        self.component = component
        self.message = message
    }

    /// "component: message".
    public var description: String { "\(component): \(message)" }
}
