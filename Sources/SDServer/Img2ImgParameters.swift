import Foundation
import Hummingbird
import SDPipeline

/// `POST /sdapi/v1/img2img`: AUTOMATIC1111's image-to-image and inpainting, over the same
/// queue, checks and answer as txt2img.
extension PocketServer {
    func addImg2ImgRoute(to router: Router<ServerContext>) {
        router.post("/sdapi/v1/img2img") { [self] request, context in
            // Each holds up to maxImageBodyBytes: as many as the queue can take, then 503.
            guard imageUploads.enter() else { throw JobError.queueFull(retryAfter: 1) }
            defer { imageUploads.leave() }
            let body = try await readBody(request, limit: configuration.maxImageBodyBytes)
            let (parameters, input) = try JobParameters.automatic1111Img2Img(body: body)
            let seed = parameters.seed ?? randomSeed()
            let images = try await generate(parameters, seed: seed, imageInput: input, context: context)
            return jsonResponse(automatic1111Result(parameters, seed: seed, images: images,
                                                    extraSettings: [("denoising_strength", .number(input.strength))]))
        }
    }
}
