// The config keys of diffusers.UNet2DConditionModel's addition_embed_type "text_time" (SDXL):
// add_time_proj = Timesteps(addition_time_embed_dim), add_embedding =
// TimestepEmbedding(projection_class_embeddings_input_dim, time_embed_dim).
import SDFormat

/// The UNet's "text_time" added embedding (SDXL): widths of the time-id projection and its input.
public struct TextTimeEmbeddingConfig: Sendable, Equatable {
    /// SDXL's pipeline passes six time ids: original size, crop top-left, target size (each H, W).
    public static let timeIDCount = 6

    /// Width of the sinusoidal embedding of each time id.
    public var additionTimeEmbedDim: Int      // addition_time_embed_dim
    /// Width of the added embedding's input: pooled text embedding plus the embedded time ids.
    public var inputDim: Int                  // projection_class_embeddings_input_dim
    /// The pooled text embedding's width: what the input holds besides the time ids.
    public var pooledDim: Int { inputDim - Self.timeIDCount * additionTimeEmbedDim }

    /// nil when addition_embed_type is absent or null; other types are not supported.
    init?(_ r: ConfigReader, timeEmbeddingDim: Int) throws {
        guard let type = r.value("addition_embed_type") else { return nil }
        guard type == .string("text_time") else {
            throw r.fail("addition embeddings (addition_embed_type = \(type.serialized)) are not supported yet (text_time only)")
        }
        guard r.value("addition_time_embed_dim") != nil, r.value("projection_class_embeddings_input_dim") != nil else {
            throw r.fail("addition_embed_type text_time needs addition_time_embed_dim and projection_class_embeddings_input_dim")
        }
        additionTimeEmbedDim = try r.positiveInt("addition_time_embed_dim", 256)
        inputDim = try r.positiveInt("projection_class_embeddings_input_dim", 2816)
        guard inputDim > Self.timeIDCount * additionTimeEmbedDim else {
            throw r.fail("projection_class_embeddings_input_dim \(inputDim) leaves no room for the pooled text embedding "
                         + "beside \(Self.timeIDCount) time ids of \(additionTimeEmbedDim)")
        }
    }
}
