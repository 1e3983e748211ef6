/// Reads a `.pdm` model file (format in `ModelFile`): maps it read-only and validates the
/// header, metadata, table and every tensor's bounds before any tensor is handed out.
/// Checksums are checked by `verify()` only, since that reads every byte.
public final class ModelFileReader: WeightSource, @unchecked Sendable {
    /// One row of the tensor table.
    public struct Entry: Sendable {
        /// "component.key", e.g. "unet.conv_in.weight".
        public let key: String
        /// Element type.
        public let dtype: TensorDType
        /// Dimensions, outermost first.
        public let shape: [Int]
        /// Byte range of the tensor's data in the file.
        public let dataRange: Range<Int>
        /// q8 scales (rows × f32) or nil.
        public let scalesRange: Range<Int>?
        /// `Checksum` of the data bytes then the scale bytes.
        public let checksum: UInt64

        /// The component the tensor belongs to: the key up to its first dot.
        public var component: String { String(key.prefix { $0 != "." }) }
        /// Elements in the tensor: the product of `shape`.
        public var elementCount: Int { shape.reduce(1, *) }
        /// Bytes on disk, scales included.
        public var storedBytes: Int { dataRange.count + (scalesRange?.count ?? 0) }
    }

    /// The mapped file.
    public let file: MappedFile
    /// The format version from the header.
    public let version: UInt32
    /// The metadata entries, in file order.
    public let metadata: [(String, MetadataValue)]
    /// Every tensor, in table order.
    public let entries: [Entry]
    private let index: [String: Int]

    /// The file's path, for error messages.
    public var sourceName: String { file.path }
    /// Every tensor key, in table order.
    public var tensorKeys: [String] { entries.map(\.key) }

    /// Maps the model file at `path` and reads its header, metadata and tensor table; throws `FormatError`.
    public convenience init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    /// Reads the header, metadata and tensor table of an already-mapped file; throws `FormatError`.
    public init(file: MappedFile) throws {
        self.file = file
        let path = file.path
        let base = file.base
        guard file.byteCount >= ModelFile.headerBytes,
              Array(UnsafeRawBufferPointer(start: base, count: 8)) == ModelFile.magic else {
            throw FormatError(path, "not a PocketDiffusion model file (.pdm); convert weights with `pocketsd convert`")
        }
        var header = ByteReader(base: base, offset: 8, end: ModelFile.headerBytes, path: path, what: "header")
        version = try header.u32()
        guard version == ModelFile.version else {
            throw FormatError(path, "model file format version \(version) is not supported (this build reads \(ModelFile.version))")
        }
        let alignment = Int(try header.u32())
        let metadataOffset = try header.int(), metadataBytes = try header.int()
        let tableOffset = try header.int(), tableBytes = try header.int()
        let tensorCount = try header.int()
        let dataOffset = try header.int()
        let declaredBytes = try header.int()
        let headerChecksum = try header.u64()
        guard declaredBytes == file.byteCount else {
            throw FormatError(path, declaredBytes > file.byteCount
                ? "model file is truncated (\(file.byteCount) of \(declaredBytes) bytes)"
                : "model file has \(file.byteCount - declaredBytes) unexpected trailing bytes")
        }
        guard alignment >= 64, alignment <= ModelFile.componentAlignment, alignment & (alignment - 1) == 0 else {
            throw FormatError(path, "corrupted header (alignment \(alignment))")
        }
        for (offset, count) in [(metadataOffset, metadataBytes), (tableOffset, tableBytes)] {
            guard offset >= ModelFile.headerBytes, count <= file.byteCount - offset else {
                throw FormatError(path, "corrupted header (section outside the file)")
            }
        }
        guard dataOffset <= file.byteCount, dataOffset >= ModelFile.headerBytes else {
            throw FormatError(path, "corrupted header (data outside the file)")
        }
        var sum = Checksum()
        sum.update(UnsafeRawBufferPointer(start: base, count: 72))
        sum.update(UnsafeRawBufferPointer(start: base + metadataOffset, count: metadataBytes))
        sum.update(UnsafeRawBufferPointer(start: base + tableOffset, count: tableBytes))
        guard sum.value == headerChecksum else { throw FormatError(path, "corrupted header, metadata or tensor table (checksum mismatch)") }

        var meta = ByteReader(base: base, offset: metadataOffset, end: metadataOffset + metadataBytes, path: path, what: "metadata")
        let metaCount = Int(try meta.u32())
        guard metaCount <= metadataBytes / 3 else { throw FormatError(path, "corrupted metadata (entry count)") }
        var metadata: [(String, MetadataValue)] = []
        for _ in 0..<metaCount {
            let key = try meta.key()
            switch try meta.u8() {
            case 1: metadata.append((key, .string(try meta.string())))
            case 2: metadata.append((key, .int(Int64(bitPattern: try meta.u64()))))
            case 3: metadata.append((key, .float(Double(bitPattern: try meta.u64()))))
            case 4: metadata.append((key, .bool(try meta.u8() != 0)))
            case 5:
                let n = Int(try meta.u32())
                guard n <= metadataBytes / 4 else { throw FormatError(path, "corrupted metadata (array length)") }
                var items: [String] = []
                items.reserveCapacity(n)
                for _ in 0..<n { items.append(try meta.string()) }
                metadata.append((key, .strings(items)))
            case let t: throw FormatError(path, "corrupted metadata (unknown type \(t) for \(key))")
            }
        }

        var table = ByteReader(base: base, offset: tableOffset, end: tableOffset + tableBytes, path: path, what: "tensor table")
        guard tensorCount <= tableBytes / 36 else { throw FormatError(path, "corrupted tensor table (tensor count)") }
        var entries: [Entry] = []
        var index: [String: Int] = [:]
        entries.reserveCapacity(tensorCount)
        for _ in 0..<tensorCount {
            let key = try table.key()
            let code = try table.u8()
            guard let dtype = ModelFile.dtype(code: code) else { throw FormatError(path, "tensor \(key): unknown dtype code \(code)") }
            let rank = Int(try table.u8())
            guard rank <= 8 else { throw FormatError(path, "tensor \(key): rank \(rank)") }
            var shape: [Int] = []
            var count = 1
            for _ in 0..<rank {
                let d = try table.int()
                let (p, overflow) = count.multipliedReportingOverflow(by: d)
                guard !overflow, p <= file.byteCount else { throw FormatError(path, "tensor \(key): impossible shape") }
                shape.append(d)
                count = p
            }
            let offset = try table.int(), bytes = try table.int(), scalesOffset = try table.int()
            let checksum = try table.u64()
            guard offset >= dataOffset, offset % alignment == 0, bytes <= file.byteCount - offset else {
                throw FormatError(path, "tensor \(key): data outside the file")
            }
            guard bytes == count * dtype.byteSize else { throw FormatError(path, "tensor \(key): \(bytes) bytes for shape \(shape)") }
            var scalesRange: Range<Int>? = nil
            if dtype == .q8 {
                let rows = shape.first ?? 1
                guard scalesOffset >= dataOffset, scalesOffset % 4 == 0, rows * 4 <= file.byteCount - scalesOffset else {
                    throw FormatError(path, "tensor \(key): scales outside the file")
                }
                scalesRange = scalesOffset..<(scalesOffset + rows * 4)
            }
            guard index[key] == nil else { throw FormatError(path, "tensor \(key) appears twice") }
            index[key] = entries.count
            entries.append(Entry(key: key, dtype: dtype, shape: shape, dataRange: offset..<(offset + bytes),
                                 scalesRange: scalesRange, checksum: checksum))
        }
        let ranges = (entries.map { ($0.key, $0.dataRange) } + entries.compactMap { e in e.scalesRange.map { (e.key, $0) } })
            .filter { !$0.1.isEmpty }.sorted { $0.1.lowerBound < $1.1.lowerBound }
        for (a, b) in zip(ranges, ranges.dropFirst()) where a.1.upperBound > b.1.lowerBound {
            throw FormatError(path, "tensors \(a.0) and \(b.0) overlap")
        }
        self.metadata = metadata
        self.entries = entries
        self.index = index
    }

    /// The table entry for `key`, nil if the file has none.
    public func entry(_ key: String) -> Entry? { index[key].map { entries[$0] } }

    /// A view of tensor `key` in the mapping (no copy; q8 with its scales), nil if absent.
    public func tensor(_ key: String) -> TensorView? {
        guard let e = entry(key) else { return nil }
        let scales = e.scalesRange.map { (file.base + $0.lowerBound).assumingMemoryBound(to: Float.self) }
        return TensorView(dtype: e.dtype, shape: e.shape, data: file.base + e.dataRange.lowerBound, scales: scales)
    }

    /// The metadata value stored under `key`, nil if absent.
    public subscript(metadata key: String) -> MetadataValue? { metadata.first { $0.0 == key }?.1 }

    /// The metadata string under `key`; nil if absent or of another type.
    public func string(_ key: String) -> String? {
        if case .string(let s)? = self[metadata: key] { return s }
        return nil
    }

    /// The metadata integer under `key`; nil if absent or of another type.
    public func int(_ key: String) -> Int? {
        if case .int(let v)? = self[metadata: key] { return Int(v) }
        return nil
    }

    /// The metadata string array under `key`; nil if absent or of another type.
    public func strings(_ key: String) -> [String]? {
        if case .strings(let v)? = self[metadata: key] { return v }
        return nil
    }

    /// A component's config (a JSON object stored as text).
    public func config(_ component: String) throws -> JSON {
        guard let text = string("\(component).config") else { throw FormatError(file.path, "no \(component) config in the model file") }
        do { return try JSON(parsing: text) } catch { throw FormatError(file.path, "\(component) config: \(error)") }
    }

    /// Components in file order, each with the byte range its tensors occupy.
    public var components: [(name: String, range: Range<Int>)] {
        var result: [(name: String, range: Range<Int>)] = []
        for e in entries {
            let lo = e.dataRange.lowerBound, hi = max(e.dataRange.upperBound, e.scalesRange?.upperBound ?? 0)
            if let last = result.last, last.name == e.component {
                result[result.count - 1].range = min(last.range.lowerBound, lo)..<max(last.range.upperBound, hi)
            } else {
                result.append((e.component, lo..<hi))
            }
        }
        return result
    }

    /// A view of one component's tensors under their diffusers keys (prefix removed).
    public func component(_ name: String) -> WeightSource { ComponentWeights(file: self, prefix: name + ".") }

    /// Checks every tensor's checksum; returns the keys that fail.
    public func verify(progress: ((Int, Int) -> Void)? = nil) -> [String] {
        var bad: [String] = []
        for (i, e) in entries.enumerated() {
            var sum = Checksum()
            sum.update(UnsafeRawBufferPointer(start: file.base + e.dataRange.lowerBound, count: e.dataRange.count))
            if let s = e.scalesRange { sum.update(UnsafeRawBufferPointer(start: file.base + s.lowerBound, count: s.count)) }
            if sum.value != e.checksum { bad.append(e.key) }
            // Verifying reads the whole file: drop the pages behind us to keep memory flat.
            file.release(e.dataRange)
            progress?(i + 1, entries.count)
        }
        return bad
    }
}

/// One component of a model file, keyed without the component prefix.
final class ComponentWeights: WeightSource, @unchecked Sendable {
    let file: ModelFileReader
    let prefix: String
    init(file: ModelFileReader, prefix: String) {
        self.file = file
        self.prefix = prefix
    }
    var sourceName: String { file.sourceName }
    var tensorKeys: [String] { file.tensorKeys.filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) } }
    func tensor(_ key: String) -> TensorView? { file.tensor(prefix + key) }
}
