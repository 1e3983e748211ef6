import CPNG
import Glibc

/// PNG input through libpng's simplified API (which, unlike the row API, reports errors
/// instead of jumping out of Swift). Every PNG colour type is accepted and converted to
/// 8-bit RGB as `PIL.Image.open(path).convert("RGB")` does for the files people have:
/// grey replicated to three channels, palettes expanded, alpha dropped (not composited),
/// 16-bit samples reduced to their high byte (Pillow clips 16-bit grey to 255 instead).
public enum PNGReader {
    /// Larger files are refused before they are read: a 16384² RGBA PNG compresses to far less.
    public static let maxFileBytes = 512 << 20
    /// Either side of a PNG that is read: checked from the header before any pixel buffer
    /// is allocated (16384² RGBA is 1 GiB; SD 1.x works at 512²–1024²).
    public static let maxSide = 16384
    /// Pixels in a PNG that is read: 16 Mpx (4096², 4× what the server's 2048 px side allows),
    /// so decoding never holds more than 176 MiB (16-bit samples, then RGB). It was 64 Mpx,
    /// up to 960 MiB, until the fuzzer made a 300-byte file ask for a 286 MB buffer.
    public static let maxPixels = 1 << 24
    /// deflate's largest compression ratio (258-byte matches in 2 bits): compressed pixel
    /// data can be no smaller than its size divided by this.
    static let maxDeflateRatio = 1032

    /// A PNG that cannot be read or is refused, with the file's path in its message.
    public struct Error: Swift.Error, CustomStringConvertible, Equatable {
        /// "path: message".
        public let description: String
        init(_ path: String, _ message: String) { description = "\(path): \(message)" }
    }

    /// Reads the PNG at `path` as 8-bit RGB.
    public static func read(path: String) throws -> RGBImage {
        try decode(readFile(path), name: path)
    }

    /// Decodes a PNG held in memory; `name` labels errors.
    public static func decode(_ bytes: [UInt8], name: String) throws -> RGBImage {
        let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        guard bytes.count >= 8, Array(bytes.prefix(8)) == signature else {
            throw Error(name, bytes.count < 8 && signature.starts(with: bytes)
                        ? "truncated PNG file" : "not a PNG file")
        }
        var image = png_image()
        image.version = png_uint_32(PNG_IMAGE_VERSION)
        defer { png_image_free(&image) }
        let began = bytes.withUnsafeBytes { png_image_begin_read_from_memory(&image, $0.baseAddress, $0.count) }
        guard began != 0 else { throw Error(name, "unreadable PNG (\(message(of: &image)))") }
        let width = Int(image.width), height = Int(image.height)
        guard width >= 1, height >= 1, width <= maxSide, height <= maxSide, width * height <= maxPixels else {
            throw Error(name, "PNG of \(width)×\(height) pixels is too large (at most \(maxSide) per side and \(maxPixels) pixels)")
        }
        // A header may promise far more pixels than the file holds: refuse it before the
        // buffers are allocated, from the bits per pixel of IHDR (bit depth at byte 24, colour
        // type at 25; libpng has checked that IHDR comes first and is valid).
        let channels = [0: 1, 2: 3, 3: 1, 4: 2, 6: 4][Int(bytes[25])] ?? 4
        let leastDataBytes = width * height * channels * Int(bytes[24]) / 8 / maxDeflateRatio
        guard bytes.count >= leastDataBytes else {
            throw Error(name, "damaged or truncated PNG (\(bytes.count) bytes cannot hold \(width)×\(height) pixels)")
        }
        // RGBA, then the alpha channel dropped: libpng composites onto a background only for
        // formats without alpha, and PIL's convert("RGB") does not composite.
        var rgb = [UInt8](repeating: 0, count: width * height * 3)
        let sixteenBit = image.format & png_uint_32(PNG_FORMAT_FLAG_LINEAR) != 0
        let finished: Int32
        if sixteenBit {
            // libpng takes 16-bit samples as linear light and would gamma-encode them for an
            // 8-bit format: read them as they are (premultiplied by alpha) and keep the high
            // byte of each, the plain 8-bit reduction.
            image.format = png_uint_32(PNG_FORMAT_FLAG_COLOR | PNG_FORMAT_FLAG_ALPHA | PNG_FORMAT_FLAG_LINEAR)
            var wide = [UInt16](repeating: 0, count: width * height * 4)
            finished = bytes.withUnsafeBytes { _ in
                wide.withUnsafeMutableBytes { png_image_finish_read(&image, nil, $0.baseAddress, 0, nil) }
            }
            for p in 0..<(width * height) {
                let alpha = UInt32(wide[4 * p + 3])
                for c in 0..<3 {
                    let premultiplied = UInt32(wide[4 * p + c])
                    let value = alpha == 0 ? 0 : min(65535, (premultiplied * 65535 + alpha / 2) / alpha)
                    rgb[3 * p + c] = UInt8(value >> 8)
                }
            }
        } else {
            image.format = png_uint_32(PNG_FORMAT_FLAG_COLOR | PNG_FORMAT_FLAG_ALPHA)
            var rgba = [UInt8](repeating: 0, count: width * height * 4)
            finished = bytes.withUnsafeBytes { _ in
                rgba.withUnsafeMutableBytes { png_image_finish_read(&image, nil, $0.baseAddress, 0, nil) }
            }
            for i in 0..<(width * height) {
                rgb[3 * i] = rgba[4 * i]
                rgb[3 * i + 1] = rgba[4 * i + 1]
                rgb[3 * i + 2] = rgba[4 * i + 2]
            }
        }
        guard finished != 0 else { throw Error(name, "damaged or truncated PNG (\(message(of: &image)))") }
        return RGBImage(width: width, height: height, pixels: rgb)
    }

    private static func message(of image: inout png_image) -> String {
        withUnsafeBytes(of: &image.message) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    private static func readFile(_ path: String) throws -> [UInt8] {
        guard let fp = fopen(path, "rb") else {
            throw Error(path, "cannot open: \(String(cString: strerror(errno)))")
        }
        defer { fclose(fp) }
        var st = stat()
        guard fstat(fileno(fp), &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { throw Error(path, "not a regular file") }
        let size = Int(st.st_size)
        guard size <= maxFileBytes else { throw Error(path, "file of \(size) bytes is larger than \(maxFileBytes)") }
        var bytes = [UInt8](repeating: 0, count: size)
        let read = bytes.withUnsafeMutableBytes { fread($0.baseAddress, 1, size, fp) }
        guard read == size else { throw Error(path, "read error") }
        return bytes
    }
}

extension RGBImage {
    /// PIL's convert("L"): ITU-R 601-2 luma in 16-bit fixed point, L = (19595 R + 38470 G +
    /// 7471 B + 2^15) >> 16 (grey pixels keep their value).
    public func luma() -> [UInt8] {
        (0..<(width * height)).map { i in
            let r = UInt32(pixels[3 * i]), g = UInt32(pixels[3 * i + 1]), b = UInt32(pixels[3 * i + 2])
            return UInt8((19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16)
        }
    }
}
