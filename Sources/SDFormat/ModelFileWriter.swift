import Glibc

/// Writes a `.pdm` model file (format in `ModelFile`) one tensor at a time. Everything
/// goes to a hidden temporary file beside the destination; the header, which makes the
/// file recognisable, is written last, and the file is renamed into place only by
/// `commit()`. A failed or interrupted run leaves nothing that looks like a model.
public final class ModelFileWriter {
    /// A tensor the writer will be given, declared up front so the table can be laid out.
    public struct PlannedTensor: Sendable {
        /// The component it belongs to ("unet", "vae", …).
        public let component: String
        /// diffusers state-dict key within the component.
        public let key: String
        /// Element type as stored.
        public let dtype: TensorDType
        /// Dimensions, outermost first.
        public let shape: [Int]
        /// A planned tensor `component.key` of `dtype` and `shape`.
        public init(component: String, key: String, dtype: TensorDType, shape: [Int]) {
            self.component = component
            self.key = key
            self.dtype = dtype
            self.shape = shape
        }
        /// The key in the model file: "component.key".
        public var fileKey: String { component + "." + key }
        /// Elements in the tensor: the product of `shape`.
        public var elementCount: Int { shape.reduce(1, *) }
    }

    struct Slot {
        let tensor: PlannedTensor
        let dataOffset: Int
        let dataBytes: Int
        let scalesOffset: Int
        var written = 0
        var scalesWritten = false
        var checksum = Checksum()
    }

    /// The destination path (the file appears there at `commit()`).
    public let path: String
    let temporaryPath: String
    private var fd: Int32
    private var slots: [Slot]
    private let metadataBytes: [UInt8]
    private let fileBytes: Int
    private let dataOffset: Int
    private var committed = false

    /// Lays out `metadata` and the table for `tensors` and opens a hidden temporary file
    /// beside `path`; throws `FormatError`.
    public init(path: String, metadata: [(String, MetadataValue)], tensors: [PlannedTensor]) throws {
        self.path = path
        let (dir, name) = ModelFileWriter.split(path)
        try ModelFileWriter.checkOutputPath(path)
        temporaryPath = dir + "/." + name + ".partial-\(getpid())"

        var meta = ByteWriter()
        meta.u32(UInt32(metadata.count))
        for (key, value) in metadata {
            meta.key(key)
            meta.u8(value.typeCode)
            switch value {
            case .string(let s): meta.string(s)
            case .int(let v): meta.u64(UInt64(bitPattern: v))
            case .float(let v): meta.u64(v.bitPattern)
            case .bool(let b): meta.u8(b ? 1 : 0)
            case .strings(let items):
                meta.u32(UInt32(items.count))
                for s in items { meta.string(s) }
            }
        }
        metadataBytes = meta.bytes

        // Layout: header, metadata, table, then data from a component boundary on.
        let tableBytes = tensors.reduce(0) { $0 + 2 + $1.fileKey.utf8.count + 2 + 8 * $1.shape.count + 32 }
        func align(_ v: Int, _ a: Int) -> Int { (v + a - 1) / a * a }
        var offset = align(ModelFile.headerBytes + metadataBytes.count + tableBytes, ModelFile.componentAlignment)
        dataOffset = offset
        var slots: [Slot] = []
        var previousComponent: String? = nil
        var seenComponents: Set<String> = []
        for t in tensors {
            if t.component != previousComponent {
                precondition(!seenComponents.contains(t.component), "tensors of a component must be contiguous")
                seenComponents.insert(t.component)
                offset = align(offset, ModelFile.componentAlignment)
                previousComponent = t.component
            }
            offset = align(offset, ModelFile.tensorAlignment)
            let dataBytes = t.elementCount * t.dtype.byteSize
            let dataAt = offset
            offset += dataBytes
            var scalesAt = 0
            if t.dtype == .q8 {
                offset = align(offset, ModelFile.tensorAlignment)
                scalesAt = offset
                offset += (t.shape.first ?? 1) * 4
            }
            slots.append(Slot(tensor: t, dataOffset: dataAt, dataBytes: dataBytes, scalesOffset: scalesAt))
        }
        self.slots = slots
        fileBytes = offset

        unlink(temporaryPath)
        // Registered before it exists: a signal between creating and registering it would
        // leave the file behind.
        ProcessSignals.register(temporaryPath)
        fd = open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            ProcessSignals.unregister(temporaryPath)
            throw FormatError(path, MappedFile.errnoText("cannot create output file"))
        }
        guard ftruncate(fd, off_t(fileBytes)) == 0 else {
            let error = FormatError(path, MappedFile.errnoText("cannot size output file"))
            abandon()
            throw error
        }
    }

    deinit { if !committed { abandon() } }

    /// Fails early, with the path, when a file cannot be created there (see
    /// `OutputFiles.check`).
    public static func checkOutputPath(_ path: String) throws { try OutputFiles.check(path) }

    static func split(_ path: String) -> (dir: String, name: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let dir = String(path[..<slash])
        return (dir.isEmpty ? "/" : dir, String(path[path.index(after: slash)...]))
    }

    /// Tensors planned.
    public var tensorCount: Int { slots.count }
    /// The finished file's size in bytes.
    public var byteCount: Int { fileBytes }

    private func pwriteAll(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws {
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw FormatError(path, MappedFile.errnoText("write failed"))
            }
            done += n
        }
    }

    /// Appends data bytes to tensor `i`; chunks arrive in order.
    public func write(tensorAt i: Int, _ chunk: UnsafeRawBufferPointer) throws {
        precondition(slots[i].written + chunk.count <= slots[i].dataBytes, "more bytes than the tensor holds")
        try pwriteAll(chunk, at: slots[i].dataOffset + slots[i].written)
        slots[i].written += chunk.count
        slots[i].checksum.update(chunk)
    }

    /// The per-row scales of a q8 tensor, after all its data.
    public func writeScales(tensorAt i: Int, _ scales: [Float]) throws {
        precondition(slots[i].tensor.dtype == .q8 && scales.count == (slots[i].tensor.shape.first ?? 1))
        precondition(slots[i].written == slots[i].dataBytes, "scales come after the data")
        try scales.withUnsafeBytes { raw in
            try pwriteAll(raw, at: slots[i].scalesOffset)
            slots[i].checksum.update(raw)
        }
        slots[i].scalesWritten = true
    }

    /// Writes the table and header, flushes, and renames the file into place.
    public func commit() throws {
        for s in slots where s.written != s.dataBytes || (s.tensor.dtype == .q8 && !s.scalesWritten) {
            throw FormatError(path, "internal error: tensor \(s.tensor.fileKey) incomplete")
        }
        var table = ByteWriter()
        for s in slots {
            table.key(s.tensor.fileKey)
            table.u8(ModelFile.code(of: s.tensor.dtype))
            table.u8(UInt8(s.tensor.shape.count))
            for d in s.tensor.shape { table.u64(UInt64(d)) }
            table.u64(UInt64(s.dataOffset))
            table.u64(UInt64(s.dataBytes))
            table.u64(UInt64(s.scalesOffset))
            table.u64(s.checksum.value)
        }
        let metadataOffset = ModelFile.headerBytes
        let tableOffset = metadataOffset + metadataBytes.count
        var header = ByteWriter()
        header.bytes.append(contentsOf: ModelFile.magic)
        header.u32(ModelFile.version)
        header.u32(UInt32(ModelFile.tensorAlignment))
        header.u64(UInt64(metadataOffset))
        header.u64(UInt64(metadataBytes.count))
        header.u64(UInt64(tableOffset))
        header.u64(UInt64(table.bytes.count))
        header.u64(UInt64(slots.count))
        header.u64(UInt64(dataOffset))
        header.u64(UInt64(fileBytes))
        var sum = Checksum()
        header.bytes.withUnsafeBytes { sum.update($0) }
        metadataBytes.withUnsafeBytes { sum.update($0) }
        table.bytes.withUnsafeBytes { sum.update($0) }
        header.u64(sum.value)
        header.bytes.append(contentsOf: [UInt8](repeating: 0, count: ModelFile.headerBytes - header.bytes.count))

        try metadataBytes.withUnsafeBytes { try pwriteAll($0, at: metadataOffset) }
        try table.bytes.withUnsafeBytes { try pwriteAll($0, at: tableOffset) }
        guard fsync(fd) == 0 else { throw FormatError(path, MappedFile.errnoText("cannot flush output file")) }
        try header.bytes.withUnsafeBytes { try pwriteAll($0, at: 0) }
        guard fsync(fd) == 0, close(fd) == 0 else { throw FormatError(path, MappedFile.errnoText("cannot flush output file")) }
        fd = -1
        guard rename(temporaryPath, path) == 0 else {
            let error = FormatError(path, MappedFile.errnoText("cannot move the finished file into place"))
            unlink(temporaryPath)
            ProcessSignals.unregister(temporaryPath)
            committed = true
            throw error
        }
        ProcessSignals.unregister(temporaryPath)
        committed = true
    }

    /// Deletes the temporary file.
    public func abandon() {
        if fd >= 0 { close(fd); fd = -1 }
        unlink(temporaryPath)
        ProcessSignals.unregister(temporaryPath)
        committed = true
    }
}
