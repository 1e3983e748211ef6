import CPNG
import Glibc
import SDFormat

/// An 8-bit RGB image, rows top to bottom.
public struct RGBImage: Sendable {
    /// Width in pixels.
    public let width: Int
    /// Height in pixels.
    public let height: Int
    /// width × height × 3 bytes.
    public var pixels: [UInt8]

    /// An image from interleaved RGB bytes, row by row; `pixels` must hold width × height × 3.
    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * 3)
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// Converts one NCHW image in [-1, 1] (the VAE's output) to 8 bits as diffusers does:
    /// clamp((x + 1) / 2, 0, 1), then round(v · 255). NaN (a diverged run, e.g. epsilon
    /// prediction on a zero-terminal-SNR schedule) becomes 0, as numpy's uint8 cast gives
    /// diffusers, instead of trapping in the conversion.
    public init(decoded: UnsafeBufferPointer<Float>, width: Int, height: Int) {
        precondition(decoded.count == 3 * width * height)
        let plane = width * height
        var pixels = [UInt8](repeating: 0, count: plane * 3)
        for c in 0..<3 {
            for i in 0..<plane {
                let v = min(max(decoded[c * plane + i] / 2 + 0.5, 0), 1)
                pixels[i * 3 + c] = v.isNaN ? 0 : UInt8((v * 255).rounded(.toNearestOrEven))
            }
        }
        self.init(width: width, height: height, pixels: pixels)
    }

    /// Images laid out in a rows × columns grid (diffusers' `make_image_grid`); all
    /// images must share a size, and rows · columns must equal their count.
    public static func grid(_ images: [RGBImage], rows: Int, columns: Int) -> RGBImage {
        precondition(rows * columns == images.count && !images.isEmpty)
        let w = images[0].width, h = images[0].height
        var pixels = [UInt8](repeating: 0, count: w * columns * h * rows * 3)
        for (n, image) in images.enumerated() {
            let (gy, gx) = (n / columns, n % columns)
            for y in 0..<h {
                let src = y * w * 3
                let dst = ((gy * h + y) * w * columns + gx * w) * 3
                for i in 0..<(w * 3) { pixels[dst + i] = image.pixels[src + i] }
            }
        }
        return RGBImage(width: w * columns, height: h * rows, pixels: pixels)
    }
}

enum PNGText {
    /// Whether `text` goes in a tEXt/zTXt chunk. Those hold Latin-1 by the specification;
    /// ASCII is the same in Latin-1 and UTF-8, so it is stored as it is, and any other text
    /// goes to iTXt as UTF-8 (readers such as Pillow load both kinds alike).
    static func fitsLatin1Chunk(_ text: String) -> Bool { text.utf8.allSatisfy { $0 < 0x80 } }
}

/// PNG output through libpng, with text chunks (AUTOMATIC1111 keeps the generation
/// settings in a `parameters` chunk), through `AtomicFile` or a run's `OutputFiles`.
public enum PNGWriter {
    /// Writes `image` as a PNG at `path` atomically, with `text` as (keyword, value) text chunks.
    public static func write(_ image: RGBImage, to path: String, text: [(String, String)] = []) throws {
        try AtomicFile.write(path, bytes: try encoded(image, path: path, text: text))
    }

    /// Writes the image as output `path` of `outputs` (renamed into place at its commit).
    public static func write(_ image: RGBImage, to path: String, text: [(String, String)] = [], in outputs: OutputFiles) throws {
        try outputs.write(path, bytes: try encoded(image, path: path, text: text))
    }

    static func encoded(_ image: RGBImage, path: String, text: [(String, String)]) throws -> [UInt8] {
        guard let bytes = encode(image, text: text) else { throw FormatError(path, "cannot encode the image as PNG") }
        return bytes
    }

    /// The PNG file's bytes. libpng reports errors through longjmp, which Swift cannot
    /// catch (with no jump buffer set, libpng aborts); the "simplified" API would, but
    /// cannot write text chunks. So nothing here may fail inside libpng: the image is
    /// checked before calling, and bytes go to memory through a callback that cannot fail
    /// (a full disk met by libpng's own fwrite would abort the process); the caller writes
    /// them and sees the error. A server sends these bytes as they are: the same as the file.
    public static func encode(_ image: RGBImage, text: [(String, String)] = []) -> [UInt8]? {
        guard image.width > 0, image.height > 0, image.width < 1 << 24, image.height < 1 << 24,
              image.pixels.count == image.width * image.height * 3 else { return nil }
        guard let png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nil, nil, nil) else { return nil }
        var pngOpt: png_structp? = png
        guard let info = png_create_info_struct(png) else {
            png_destroy_write_struct(&pngOpt, nil)
            return nil
        }
        var infoOpt: png_infop? = info
        defer { png_destroy_write_struct(&pngOpt, &infoOpt) }
        let sink = PNGByteSink()
        let sinkPointer = Unmanaged.passRetained(sink)
        defer { sinkPointer.release() }
        png_set_write_fn(png, sinkPointer.toOpaque(), { png, data, length in
            guard let png, let data, let io = png_get_io_ptr(png) else { return }
            Unmanaged<PNGByteSink>.fromOpaque(io).takeUnretainedValue().bytes
                .append(contentsOf: UnsafeBufferPointer(start: data, count: length))
        }, { _ in })
        png_set_IHDR(png, info, png_uint_32(image.width), png_uint_32(image.height), 8, PNG_COLOR_TYPE_RGB,
                     PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT)
        // Keys and values as C strings that live until png_write_info returns.
        let cStrings = text.map { (strdup($0.0)!, strdup($0.1)!) }
        defer { for (k, v) in cStrings { free(k); free(v) } }
        let emptyLanguage = strdup("")!
        defer { free(emptyLanguage) }
        var chunks = zip(text, cStrings).map { pair, c -> png_text in
            let (key, value) = c
            var t = png_text()
            t.key = key
            t.text = value
            let length = strlen(value)
            if PNGText.fitsLatin1Chunk(pair.1) {
                // Long texts compress well; short ones are stored plain, as A1111 reads either.
                t.compression = length > 1024 ? PNG_TEXT_COMPRESSION_zTXt : PNG_TEXT_COMPRESSION_NONE
                t.text_length = length
            } else {
                // tEXt/zTXt are Latin-1 by the PNG specification; other text goes in iTXt
                // as UTF-8 (Pillow, and so A1111's readers, load either into `info`).
                t.compression = length > 1024 ? PNG_ITXT_COMPRESSION_zTXt : PNG_ITXT_COMPRESSION_NONE
                t.itxt_length = length
                t.lang = emptyLanguage
                t.lang_key = emptyLanguage
            }
            return t
        }
        if !chunks.isEmpty { png_set_text(png, info, &chunks, Int32(chunks.count)) }
        png_write_info(png, info)
        image.pixels.withUnsafeBufferPointer { p in
            for y in 0..<image.height {
                png_write_row(png, p.baseAddress! + y * image.width * 3)
            }
        }
        png_write_end(png, nil)
        return sink.bytes
    }
}

/// Where `PNGWriter.encode` collects libpng's output.
private final class PNGByteSink {
    var bytes: [UInt8] = []
}
