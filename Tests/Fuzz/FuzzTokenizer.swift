// libFuzzer target: the CLIP tokenizer on arbitrary bytes (as a prompt, and as token ids
// to decode).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTokenizer(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let tokenizer = CLIPTokenizer.bundled()
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let text = String(decoding: bytes, as: UTF8.self)
    let ids = tokenizer.tokenize(text)
    precondition(ids.count == tokenizer.maxLength, "tokenize must give maxLength ids")
    _ = tokenizer.encode(text)
    _ = tokenizer.truncatedText(of: text)
    _ = tokenizer.decode(ids)
    // Arbitrary ids, in range or not, must decode without trapping.
    let raw = UnsafeRawBufferPointer(bytes)
    let arbitrary = stride(from: 0, to: size - 3, by: 4).map { Int32(bitPattern: raw.loadUnaligned(fromByteOffset: $0, as: UInt32.self)) }
    _ = tokenizer.decode(arbitrary)
    return 0
}
