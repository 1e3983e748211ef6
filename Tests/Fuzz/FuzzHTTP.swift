// libFuzzer target: the server's request bodies, decoded and validated as the routes do
// (no server is started): AUTOMATIC1111 txt2img and img2img (base64 PNGs, masks, strength)
// and OpenAI's images/generations. Every body goes to all three decoders. Two properties
// besides "no crash": a refused body is refused with an APIError (the routes turn anything
// else into a 500), and an accepted body makes pipeline requests that pass the pipeline's own
// validation (what the server accepts, the pipeline must run).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTP(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let body = Array(UnsafeBufferPointer(start: data, count: size))
    decode("txt2img") { try JobParameters.automatic1111(body: body) }.map { check($0, nil) }
    decode("img2img") { try JobParameters.automatic1111Img2Img(body: body) }.map { check($0.0, $0.1) }
    decode("openai") { try JobParameters.openAI(body: body) }.map { check($0.0, nil) }
    return 0
}

func decode<T>(_ route: String, _ body: () throws -> T) -> T? {
    do {
        return try body()
    } catch is APIError {
        return nil
    } catch {
        fatalError("\(route): a body was refused with \(type(of: error)), not an APIError: \(error)")
    }
}

func check(_ p: JobParameters, _ input: ImageInput?) {
    if let input {
        precondition(input.image.pixels.count == input.image.width * input.image.height * 3)
    }
    for var run in p.runs(seed: p.seed ?? 0) {
        run.imageInput = input
        do { try run.validate() } catch { fatalError("an accepted body makes a request the pipeline refuses: \(error)") }
        blackHole += run.imageCount
    }
}
