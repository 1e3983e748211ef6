import SDFormat

/// Checks a source model before anything is written: every component present with
/// weights, non-float buffers (e.g. `position_ids`) set aside as unused.
enum ModelCheck {
    static func validate(_ model: inout SourceModel) throws {
        for i in model.components.indices {
            let c = model.components[i]
            let (floats, others) = (c.tensors.filter { $0.entry.dtype.isFloat }, c.tensors.filter { !$0.entry.dtype.isFloat })
            model.unusedKeys += others.map { "\(c.name).\($0.key)" }
            model.components[i].tensors = floats
            guard !floats.isEmpty else { throw FormatError(c.tensors.first?.file.sourceName ?? c.name, "component \(c.name) has no weights") }
        }
    }
}
