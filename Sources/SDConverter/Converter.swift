import Glibc
import SDFormat
import SDKernels

/// How weights are stored in the model file.
public enum WeightMode: String, CaseIterable, Sendable {
    case fp32, fp16, int8
}

/// What a conversion does beyond copying the model: weight storage, config overrides,
/// LoRA merges and an optional TAESD.
public struct ConversionOptions: Sendable {
    /// How the weights are stored (int8 by default).
    public var weights: WeightMode
    /// A diffusers folder whose configs replace the inferred ones (single-file inputs).
    public var configFolder: String?
    /// Overrides the stored scheduler's prediction_type ("epsilon" or "v_prediction"); a
    /// single-file SD 2.x checkpoint is otherwise taken as v_prediction, as diffusers does.
    public var predictionType: String?
    /// The values `predictionType` accepts.
    public static let predictionTypes = ["epsilon", "v_prediction"]
    /// LoRA files merged into the text encoders' and UNet's weights before rounding, in order.
    public var loras: [LoRASpec] = []
    /// A TAESD (diffusers AutoencoderTiny folder or original taesd_decoder.safetensors) to store
    /// as the "taesd" component.
    public var taesd: String?
    /// Options with no LoRA and no TAESD.
    public init(weights: WeightMode = .int8, configFolder: String? = nil, predictionType: String? = nil) {
        self.weights = weights
        self.configFolder = configFolder
        self.predictionType = predictionType
    }
}

/// What a conversion wrote: per-component figures, the input's kind and unused keys.
public struct ConversionReport: Sendable {
    /// Figures for one component of the output.
    public struct Component: Sendable {
        /// The component ("unet", "vae", "text_encoder", …).
        public var name: String
        /// Tensors written.
        public var tensorCount = 0
        /// Elements across its tensors.
        public var parameterCount = 0
        /// Bytes its tensors take in the file (q8 scales included).
        public var storedBytes = 0
        /// Tensors per stored dtype ("F16", "Q8", …).
        public var dtypeCounts: [String: Int] = [:]
        /// Largest |w − ŵ| / max|w| over the component's rounded tensors.
        public var maxRelativeError: Double = 0
        /// √(Σ(w − ŵ)² / Σw²) over the component's rounded tensors.
        public var rmsRelativeError: Double { sumSquares > 0 ? (errorSquares / sumSquares).squareRoot() : 0 }
        var errorSquares: Double = 0
        var sumSquares: Double = 0
    }
    /// What the input was ("diffusers folder", "single-file checkpoint", …).
    public var inputKind: String
    /// Where the tokenizer came from (a folder, or the bundled CLIP BPE).
    public var tokenizerSource: String
    /// One entry per component written.
    public var components: [Component]
    /// Input tensor keys that were not converted.
    public var unusedKeys: [String]
    /// Size of the written model file, bytes.
    public var outputBytes: Int
    /// One entry per `--lora` file, in the order given.
    public var loras: [LoRAReport] = []
    /// Settings the input did not determine (a single file's scheduler, size, …) and what
    /// the converter took, each naming the flag that sets it; also stored as `general.assumptions`.
    public var assumptions: [String] = []
}

/// Converts a diffusers folder or a single-file checkpoint into one `.pdm` model file,
/// one tensor at a time, in bounded memory.
public enum Converter {
    /// The converter's name and version, stored as the file's `general.converter` metadata.
    public static let version = "pocketsd-convert 1"
    /// Elements converted per chunk: bounds the converter's working memory (~16 MB).
    static let chunkElements = 1 << 22

    /// Converts the model at `input` into the model file `output`; `progress` gets (done, total, key)
    /// before each tensor and once at the end. Throws on a bad input or a failed write.
    public static func convert(input: String, output: String, options: ConversionOptions,
                               progress: ((_ done: Int, _ total: Int, _ key: String) -> Void)? = nil) throws -> ConversionReport {
        guard FileSystem.exists(input) else { throw FormatError(input, "no such file or folder") }
        if let p = options.predictionType, !ConversionOptions.predictionTypes.contains(p) {
            throw FormatError(input, "prediction type must be \(ConversionOptions.predictionTypes.joined(separator: " or ")) (got \(p))")
        }
        var source: SourceModel
        if FileSystem.isDirectory(input) {
            if options.configFolder != nil { throw FormatError(input, "--config applies to single-file checkpoints only") }
            source = try DiffusersFolder.read(input)
        } else {
            source = try SingleFileCheckpoint.read(input, configFolder: options.configFolder, predictionType: options.predictionType)
        }
        if let p = options.predictionType { source.schedulerConfig = source.schedulerConfig.setting("prediction_type", .string(p)) }
        try ModelCheck.validate(&source)
        // Every LoRA is checked against the model before the output file is created.
        let lora = try LoRAPlan(specs: options.loras, model: source)
        if let taesd = options.taesd {
            let latents = source.components.first { $0.name == "unet" }?.config["in_channels"]?.int ?? 4
            let levels = source.components.first { $0.name == "vae" }?.config["block_out_channels"]?.array?.count ?? 4
            source.components.append(try TinyAutoencoderSource.read(taesd, latentChannels: latents, upsamplingFactor: 1 << (levels - 1)))
        }

        var planned: [ModelFileWriter.PlannedTensor] = []
        var sources: [SourceModel.Tensor] = []
        for component in source.components {
            for t in ExecutionOrder.sorted(component.tensors, component: component.name, key: \.key) {
                planned.append(.init(component: component.name, key: t.key,
                                     dtype: storedType(key: t.key, shape: t.shape, mode: options.weights), shape: t.shape))
                sources.append(t)
            }
        }
        let writer = try ModelFileWriter(path: output, metadata: metadata(source, options: options), tensors: planned)
        var reports = source.components.map { ConversionReport.Component(name: $0.name) }
        var buffer = [Float](repeating: 0, count: chunkElements)
        for (i, (plan, src)) in zip(planned, sources).enumerated() {
            progress?(i, planned.count, plan.fileKey)
            let c = reports.firstIndex { $0.name == plan.component }!
            try write(src, as: plan, index: i, writer: writer, buffer: &buffer, report: &reports[c], lora: lora)
            // The source was read once; drop its pages so memory stays flat.
            src.file.file.release(src.entry.range)
            lora.release(plan.fileKey)
        }
        progress?(planned.count, planned.count, "")
        try writer.commit()
        return ConversionReport(inputKind: source.kind, tokenizerSource: source.tokenizer.source, components: reports,
                                unusedKeys: source.unusedKeys, outputBytes: writer.byteCount, loras: lora.reports,
                                assumptions: source.assumptions)
    }

    /// int8 for the matrices of linear and conv layers; embeddings, norms, biases and
    /// tiny tensors keep 16 bits.
    static func storedType(key: String, shape: [Int], mode: WeightMode) -> TensorDType {
        switch mode {
        case .fp32: return .f32
        case .fp16: return .f16
        case .int8:
            let rows = shape.first ?? 0
            let cols = rows > 0 ? shape.reduce(1, *) / rows : 0
            let quantizable = key.hasSuffix(".weight") && shape.count >= 2 && !key.contains("embedding")
                && rows >= 16 && cols >= 16
            return quantizable ? .q8 : .f16
        }
    }

    static func metadata(_ source: SourceModel, options: ConversionOptions) -> [(String, MetadataValue)] {
        var m: [(String, MetadataValue)] = [
            ("general.converter", .string(version)),
            ("general.source_kind", .string(source.kind)),
            ("general.weights", .string(options.weights.rawValue)),
            ("general.components", .strings(source.components.map(\.name))),
            ("general.family", .string(family(source))),
            ("scheduler.config", .string(source.schedulerConfig.serialized)),
        ]
        for c in source.components { m.append(("\(c.name).config", .string(c.config.serialized))) }
        m += source.tokenizer.metadata
        m += sdxlMetadata(source)
        if !options.loras.isEmpty { m.append(("general.loras", .strings(options.loras.map { $0.label }))) }
        if !source.assumptions.isEmpty { m.append(("general.assumptions", .strings(source.assumptions))) }
        return m
    }

    static func family(_ source: SourceModel) -> String {
        let unet = source.components.first { $0.name == "unet" }?.config
        if source.components.contains(where: { $0.name == "text_encoder_2" }) { return "sdxl" }
        return unet?["cross_attention_dim"]?.int == 1024 ? "sd2" : "sd1"
    }

    /// Converts one tensor in row chunks and records its rounding error.
    static func write(_ src: SourceModel.Tensor, as plan: ModelFileWriter.PlannedTensor, index: Int,
                      writer: ModelFileWriter, buffer: inout [Float], report: inout ConversionReport.Component,
                      lora: LoRAPlan = LoRAPlan()) throws {
        let count = plan.elementCount
        let rows = max(plan.shape.first ?? 1, 1)
        let cols = count / rows
        let rowsPerChunk = max(1, chunkElements / max(cols, 1))
        let base = src.file.file.base + src.entry.range.lowerBound
        var scales: [Float] = plan.dtype == .q8 ? [Float](repeating: 0, count: rows) : []
        var out = [UInt8](repeating: 0, count: min(count, rowsPerChunk * cols) * plan.dtype.byteSize)
        var maxAbs: Float = 0, maxError: Float = 0
        var sumSq: Double = 0, errSq: Double = 0
        if count > buffer.count { precondition(cols <= buffer.count, "a row larger than the conversion buffer") }
        var row = 0
        while row < rows || (count == 0 && row == 0) {
            let n = count == 0 ? 0 : min(rowsPerChunk, rows - row)
            let elements = n * cols
            let start = row * cols
            try buffer.withUnsafeMutableBufferPointer { f in
                if src.transposed {
                    try loadTransposed(src, base, rows: rows, cols: cols, firstRow: row, rowCount: n, into: f.baseAddress!)
                } else {
                    try SourceFloats.load(src.entry.dtype, base, from: start, count: elements, into: f.baseAddress!, key: src.key, path: src.file.sourceName)
                }
                try lora.apply(to: "\(plan.component).\(src.key)", firstRow: row, rowCount: n, cols: cols, chunk: f.baseAddress!)
                for i in 0..<elements {
                    let v = f[i]
                    maxAbs = max(maxAbs, abs(v))
                    sumSq += Double(v) * Double(v)
                }
                try out.withUnsafeMutableBytes { o in
                    switch plan.dtype {
                    case .f32:
                        o.baseAddress!.copyMemory(from: f.baseAddress!, byteCount: elements * 4)
                    case .f16:
                        let h = o.baseAddress!.assumingMemoryBound(to: Float16.self)
                        for i in 0..<elements {
                            // Values beyond the f16 range saturate instead of becoming inf.
                            let v = min(max(f[i], -65504), 65504)
                            h[i] = Float16(v)
                            let e = abs(Float(h[i]) - f[i])
                            maxError = max(maxError, e)
                            errSq += Double(e) * Double(e)
                        }
                    case .q8:
                        let q = o.baseAddress!.assumingMemoryBound(to: Int8.self)
                        scales.withUnsafeMutableBufferPointer { s in
                            Quantization.quantizeRowsQ8(f.baseAddress!, rows: n, cols: cols, values: q, scales: s.baseAddress! + row)
                            for r in 0..<n {
                                for k in 0..<cols {
                                    let e = abs(Float(q[r * cols + k]) * s[row + r] - f[r * cols + k])
                                    maxError = max(maxError, e)
                                    errSq += Double(e) * Double(e)
                                }
                            }
                        }
                    default:
                        throw FormatError(src.file.sourceName, "internal error: cannot store \(plan.dtype)")
                    }
                    try writer.write(tensorAt: index, UnsafeRawBufferPointer(start: o.baseAddress, count: elements * plan.dtype.byteSize))
                }
            }
            row += max(n, 1)
        }
        if plan.dtype == .q8 { try writer.writeScales(tensorAt: index, scales) }
        report.tensorCount += 1
        report.parameterCount += count
        report.storedBytes += count * plan.dtype.byteSize + scales.count * 4
        report.dtypeCounts[plan.dtype.rawValue, default: 0] += 1
        if plan.dtype != .f32 {
            if maxAbs > 0 { report.maxRelativeError = max(report.maxRelativeError, Double(maxError / maxAbs)) }
            report.sumSquares += sumSq
            report.errorSquares += errSq
        }
    }

    /// Rows [firstRow, firstRow + rowCount) of a matrix stored transposed: the source is
    /// [cols, rows], so output column k is a contiguous run of source row k.
    static func loadTransposed(_ src: SourceModel.Tensor, _ base: UnsafeRawPointer, rows: Int, cols: Int, firstRow: Int,
                               rowCount: Int, into f: UnsafeMutablePointer<Float>) throws {
        guard src.entry.shape == [cols, rows] else {
            throw FormatError(src.file.sourceName, "internal error: \(src.entry.key) has shape \(src.entry.shape), not [\(cols), \(rows)]")
        }
        var run = [Float](repeating: 0, count: rowCount)
        try run.withUnsafeMutableBufferPointer { r in
            for k in 0..<cols {
                try SourceFloats.load(src.entry.dtype, base, from: k * rows + firstRow, count: rowCount, into: r.baseAddress!,
                                      key: src.entry.key, path: src.file.sourceName)
                for i in 0..<rowCount { f[i * cols + k] = r[i] }
            }
        }
    }
}
