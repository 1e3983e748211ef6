/// Reader for the safetensors format (huggingface/safetensors): an 8-byte little-endian
/// header length N, N bytes of JSON `{key: {dtype, shape, data_offsets: [begin, end]},
/// "__metadata__": {…}}`, then the data, offsets relative to its start. Everything is
/// validated before any tensor is handed out: header inside the file, JSON well-formed,
/// known dtypes, byte ranges = shape × element size, inside the data, not overlapping.
public final class SafetensorsFile: WeightSource, @unchecked Sendable {
    /// One tensor of the header: key, element type, shape and where its bytes are.
    public struct Entry: Sendable {
        /// The tensor's name in the state dict.
        public let key: String
        /// Element type.
        public let dtype: TensorDType
        /// Dimensions, outermost first.
        public let shape: [Int]
        /// Byte range inside the file (not the data section).
        public let range: Range<Int>

        /// An entry; `range` is in file bytes.
        public init(key: String, dtype: TensorDType, shape: [Int], range: Range<Int>) {
            self.key = key
            self.dtype = dtype
            self.shape = shape
            self.range = range
        }

        /// Rows `rows` of this tensor along its first axis (a fused q/k/v projection's parts),
        /// as an entry over the same bytes; nil when the range is outside the tensor.
        public func rows(_ rows: Range<Int>, key newKey: String) -> Entry? {
            guard let first = shape.first, rows.lowerBound >= 0, rows.upperBound <= first, !rows.isEmpty else { return nil }
            let rowBytes = shape.dropFirst().reduce(1, *) * dtype.byteSize
            let start = range.lowerBound + rows.lowerBound * rowBytes
            return Entry(key: newKey, dtype: dtype, shape: [rows.count] + shape.dropFirst(), range: start..<(start + rows.count * rowBytes))
        }
    }

    /// The mapped file.
    public let file: MappedFile
    /// Every tensor, in header order.
    public let entries: [Entry]
    /// The header's `__metadata__` key–value pairs, in order.
    public let metadata: [(String, String)]
    private let index: [String: Int]

    /// The file's path, for error messages.
    public var sourceName: String { file.path }
    /// Every tensor key, in header order.
    public var tensorKeys: [String] { entries.map(\.key) }

    /// The largest header we accept: real ones are well under 1 MB.
    static let maxHeaderBytes = 100 << 20

    /// Maps and validates the safetensors file at `path`; throws `FormatError`.
    public convenience init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    /// Parses and validates the header of an already-mapped file; throws `FormatError`.
    public init(file: MappedFile) throws {
        self.file = file
        let path = file.path
        guard file.byteCount >= 8 else { throw FormatError(path, "not a safetensors file (too short)") }
        let headerBytes = Int(UInt64(littleEndian: file.base.loadUnaligned(as: UInt64.self)) & 0x7FFF_FFFF_FFFF_FFFF)
        guard headerBytes >= 2, headerBytes <= file.byteCount - 8 else {
            throw FormatError(path, "not a safetensors file (header length \(headerBytes) does not fit the file of \(file.byteCount) bytes)")
        }
        guard headerBytes <= Self.maxHeaderBytes else { throw FormatError(path, "safetensors header too large (\(headerBytes) bytes)") }
        guard file.base.load(fromByteOffset: 8, as: UInt8.self) == UInt8(ascii: "{") else {
            throw FormatError(path, "not a safetensors file (header is not a JSON object)")
        }
        let header: JSON
        do {
            header = try JSON(parsing: UnsafeRawBufferPointer(start: file.base + 8, count: headerBytes))
        } catch let error as JSONError {
            throw FormatError(path, "safetensors header: \(error)")
        }
        guard let members = header.object else { throw FormatError(path, "safetensors header is not an object") }
        let dataStart = 8 + headerBytes
        let dataBytes = file.byteCount - dataStart
        var entries: [Entry] = []
        var metadata: [(String, String)] = []
        var index: [String: Int] = [:]
        for (key, value) in members {
            if key == "__metadata__" {
                for (k, v) in value.object ?? [] { metadata.append((k, v.string ?? v.serialized)) }
                continue
            }
            guard let dtypeName = value["dtype"]?.string else { throw FormatError(path, "tensor \(key): missing dtype") }
            guard let dtype = TensorDType(rawValue: dtypeName), dtype != .q8 else {
                throw FormatError(path, "tensor \(key): unknown dtype \(dtypeName)")
            }
            guard let dims = value["shape"]?.array else { throw FormatError(path, "tensor \(key): missing shape") }
            var shape: [Int] = []
            var count = 1
            for d in dims {
                guard let n = d.int, n >= 0, n < 1 << 40 else { throw FormatError(path, "tensor \(key): bad shape \(value["shape"]!.serialized)") }
                shape.append(n)
                let (product, overflow) = count.multipliedReportingOverflow(by: n)
                guard !overflow, product < 1 << 42 else { throw FormatError(path, "tensor \(key): shape too large") }
                count = product
            }
            guard let offsets = value["data_offsets"]?.array, offsets.count == 2,
                  let begin = offsets[0].int, let end = offsets[1].int, begin >= 0, begin <= end else {
                throw FormatError(path, "tensor \(key): bad data_offsets")
            }
            guard end <= dataBytes else {
                throw FormatError(path, "tensor \(key): data [\(begin), \(end)) lies outside the file (data section is \(dataBytes) bytes; truncated?)")
            }
            guard end - begin == count * dtype.byteSize else {
                throw FormatError(path, "tensor \(key): \(end - begin) bytes for shape \(shape) of \(dtypeName)")
            }
            guard index[key] == nil else { throw FormatError(path, "tensor \(key) appears twice") }
            index[key] = entries.count
            entries.append(Entry(key: key, dtype: dtype, shape: shape, range: (dataStart + begin)..<(dataStart + end)))
        }
        let sorted = entries.filter { !$0.range.isEmpty }.sorted { $0.range.lowerBound < $1.range.lowerBound }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.range.upperBound > b.range.lowerBound {
            throw FormatError(path, "tensors \(a.key) and \(b.key) overlap")
        }
        self.entries = entries
        self.metadata = metadata
        self.index = index
    }

    /// The entry for `key`, nil if the file has none.
    public func entry(_ key: String) -> Entry? { index[key].map { entries[$0] } }

    /// A view of tensor `key`'s bytes in the mapping (no copy), nil if absent.
    public func tensor(_ key: String) -> TensorView? {
        guard let e = entry(key) else { return nil }
        return TensorView(dtype: e.dtype, shape: e.shape, data: file.base + e.range.lowerBound)
    }
}
