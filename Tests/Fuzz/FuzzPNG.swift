// libFuzzer target: the PNG reader behind `--init-image`, `--mask` and the server's
// base64 images (signature, IHDR size checks, every colour type and bit depth, libpng's
// decoding of the chunks and the compressed data).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPNG(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var bytes = Array(UnsafeBufferPointer(start: data, count: size))
    // libpng refuses a critical chunk whose CRC is wrong, so nearly every mutation of a
    // header or palette would stop there; the CRCs are rewritten (as the pdm target fixes
    // its checksums) so mutations reach the size checks and the decoder behind them.
    fixChunkCRCs(&bytes)
    guard let image = try? PNGReader.decode(bytes, name: "fuzz.png") else { return 0 }
    precondition(image.width >= 1 && image.height >= 1 && image.pixels.count == image.width * image.height * 3)
    blackHole += image.luma().count
    return 0
}

/// Walks the chunks after the signature (length, type, data, CRC-32) and stores the right
/// CRC-32 of each one that lies wholly inside the input.
func fixChunkCRCs(_ bytes: inout [UInt8]) {
    var at = 8
    while at + 12 <= bytes.count {
        let length = bytes[at..<(at + 4)].reduce(0) { $0 << 8 | Int($1) }
        guard length <= bytes.count - at - 12 else { return }
        var crc: UInt32 = 0xFFFF_FFFF
        for b in bytes[(at + 4)..<(at + 8 + length)] { crc = crcTable[Int((crc ^ UInt32(b)) & 0xFF)] ^ (crc >> 8) }
        crc ^= 0xFFFF_FFFF
        for i in 0..<4 { bytes[at + 8 + length + i] = UInt8(truncatingIfNeeded: crc >> (24 - 8 * i)) }
        at += 12 + length
    }
}

/// CRC-32 (the PNG / zlib polynomial 0xEDB88320, reflected).
let crcTable: [UInt32] = (0..<256).map { n in
    var c = UInt32(n)
    for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
    return c
}
