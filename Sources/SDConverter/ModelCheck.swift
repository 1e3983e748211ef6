import Glibc
import SDFormat
import SDModels

/// Checks a source model before anything is written, by building the runtime's models
/// over its tensors: every tensor the config implies must be present with the implied
/// shape (else a one-line error naming it), and tensors the runtime never asks for are
/// listed as unused and left out. Non-float buffers (e.g. `position_ids`) are unused too.
enum ModelCheck {
    /// Kept although text-to-image never reads them: the VAE encoder serves image-to-image.
    static let keptUnread = ["encoder.", "quant_conv."]

    static func validate(_ model: inout SourceModel) throws {
        for i in model.components.indices {
            let c = model.components[i]
            let floats = c.tensors.filter { $0.entry.dtype.isFloat }
            model.unusedKeys += c.tensors.filter { !$0.entry.dtype.isFloat }.map { "\(c.name).\($0.key)" }
            let where_ = c.tensors.first?.file.sourceName ?? c.name
            guard !floats.isEmpty else { throw FormatError(where_, "component \(c.name) has no weights") }
            let weights = ShapeOnlyWeights(floats, name: where_)
            do {
                switch c.name {
                case "text_encoder": _ = try CLIPTextModel(config: CLIPTextConfig(json: c.config), weights: weights)
                case "text_encoder_2":
                    _ = try CLIPTextModelWithProjection(config: CLIPTextConfig(json: c.config), weights: weights)
                case "unet": _ = try UNet2DConditionModel(config: UNet2DConditionConfig(json: c.config), weights: weights)
                case "vae":
                    _ = try AutoencoderKL(config: AutoencoderKLConfig(json: c.config), weights: weights)
                    // diffusers' SDXL pipelines (not SD 1.x/2.x's) un-normalise the latents
                    // with these per-channel values before decoding and normalise after
                    // encoding; the runtime does neither, so refuse rather than differ.
                    let sdxl = model.components.contains { $0.name == "text_encoder_2" }
                    if sdxl, let mean = c.config["latents_mean"], !mean.isNull,
                       let std = c.config["latents_std"], !std.isNull {
                        throw FormatError(where_, "vae: latents_mean/latents_std (SDXL latent normalisation) are not supported yet")
                    }
                default: break
                }
            } catch let error as FormatError {
                let missing = "missing tensor "
                if let name = c.sourceKey, error.message.hasPrefix(missing),
                   let original = name(String(error.message.dropFirst(missing.count))) {
                    throw FormatError(error.path, "\(c.name): \(error.message) (\(original) in the checkpoint)")
                }
                throw error
            } catch let error as ModelError where error.component == c.name {
                throw FormatError(where_, "\(error)")  // already "component: message"
            } catch {
                throw FormatError(where_, "\(c.name): \(error)")
            }
            let kept = floats.filter { t in
                weights.requested.contains(t.key) || (c.name == "vae" && keptUnread.contains { t.key.hasPrefix($0) })
            }
            model.unusedKeys += floats.filter { t in !kept.contains { $0.key == t.key } }.map { "\(c.name).\($0.key)" }
            model.components[i].tensors = kept
        }
    }
}

/// Hands out tensors with the source's shapes over zero pages: enough for the models to
/// check shapes and copy their small vectors, without reading or converting weights.
final class ShapeOnlyWeights: WeightSource {
    let shapes: [String: [Int]]
    let sourceName: String
    private let zeros: UnsafeMutableRawPointer
    private let zeroBytes: Int
    private(set) var requested = Set<String>()

    init(_ tensors: [SourceModel.Tensor], name: String) {
        var shapes: [String: [Int]] = [:]
        for t in tensors { shapes[t.key] = t.shape }
        self.shapes = shapes
        sourceName = name
        // An anonymous read-only mapping reads as zeros and costs no memory until written.
        zeroBytes = max(4096, (tensors.map { $0.shape.reduce(1, *) }.max() ?? 0) * 4)
        zeros = mmap(nil, zeroBytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
    }

    deinit { munmap(zeros, zeroBytes) }

    var tensorKeys: [String] { Array(shapes.keys) }

    func tensor(_ key: String) -> TensorView? {
        guard let shape = shapes[key] else { return nil }
        requested.insert(key)
        return TensorView(dtype: .f32, shape: shape, data: UnsafeRawPointer(zeros))
    }
}
