import Foundation
import SDFormat
import SDKernels
@testable import SDModels

/// Relative RMS error ‖ours − reference‖ / ‖reference‖ allowed for a whole-model output
/// computed in fp32 against torch fp32 (accumulation order differs, nothing else should).
let modelRelativeRMSTolerance: Float = 1e-4

/// The tiny random-weight models in Tests/Fixtures (made by tools/make_tiny_models.py;
/// goldens by tools/make_goldens.py): "tiny-sd-a" stores fp16 weights, "tiny-sd-b" fp32.
let tinyModels = ["tiny-sd-a", "tiny-sd-b"]

enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures")

    static func path(_ parts: String...) -> String {
        parts.reduce(root) { $0.appendingPathComponent($1) }.path
    }

    static func json(_ path: String) throws -> JSON {
        try JSON(parsing: [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))))
    }

    /// component/config.json of a tiny model.
    static func config(_ model: String, _ component: String) throws -> JSON {
        try json(path(model, component, "config.json"))
    }

    /// The component's weights, under the fp16 variant name when that is what the folder holds.
    static func weights(_ model: String, _ component: String) throws -> SafetensorsFile {
        let base = component == "text_encoder" ? "model" : "diffusion_pytorch_model"
        let plain = path(model, component, base + ".safetensors")
        let fp16 = path(model, component, base + ".fp16.safetensors")
        return try SafetensorsFile(path: FileManager.default.fileExists(atPath: plain) ? plain : fp16)
    }

    /// The cases of golden/<component>/<model>/index.json.
    static func goldenCases(_ component: String, _ model: String) throws -> [JSON] {
        let index = try json(path("golden", component, model, "index.json"))
        return index["cases"]?.array ?? []
    }

    static func npy(_ component: String, _ model: String, _ file: JSON?) throws -> NPYArray {
        try NPYArray(path: path("golden", component, model, file?.string ?? "missing"))
    }
}

/// ‖a − b‖ / ‖b‖ over all elements; infinity when the sizes differ or a value is not finite.
func relativeRMSError(_ a: [Float], _ b: [Float]) -> Float {
    guard a.count == b.count, !b.isEmpty else { return .infinity }
    var diff: Double = 0, ref: Double = 0
    for (x, y) in zip(a, b) {
        guard x.isFinite else { return .infinity }
        diff += Double(x - y) * Double(x - y)
        ref += Double(y) * Double(y)
    }
    return Float((diff / max(ref, 1e-30)).squareRoot())
}

/// A WeightSource that forwards to another one, with one key removed or given a wrong shape:
/// how a bad model file looks to the models.
final class EditedWeights: WeightSource {
    let base: WeightSource
    let key: String
    let replacementShape: [Int]?  // nil: the key is missing

    init(_ base: WeightSource, key: String, shape: [Int]?) {
        self.base = base
        self.key = key
        self.replacementShape = shape
    }

    var sourceName: String { base.sourceName }
    var tensorKeys: [String] { base.tensorKeys.filter { $0 != key || replacementShape != nil } }

    func tensor(_ k: String) -> TensorView? {
        guard k == key, let t = base.tensor(k) else { return base.tensor(k) }
        guard let shape = replacementShape else { return nil }
        return TensorView(dtype: t.dtype, shape: shape, data: t.data)
    }
}

let testPool = ThreadPool(threads: 2)
