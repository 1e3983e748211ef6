// libFuzzer target: the .pdm reader (header, metadata, tensor table, configs, checksums).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzModelFile(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    // Random mutations almost never keep the header checksum and the declared file size
    // right, which would stop every input at the first check: fix both up in a copy (when
    // the sections lie inside the input) so the fuzzer reaches the metadata and table.
    guard size > 0 else { return 0 }
    var bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if size >= ModelFile.headerBytes {
        bytes.withUnsafeMutableBytes { raw in
            func field(_ at: Int) -> Int { Int(truncatingIfNeeded: raw.loadUnaligned(fromByteOffset: at, as: UInt64.self)) }
            raw.storeBytes(of: UInt64(size), toByteOffset: 64, as: UInt64.self)
            let sections = [(field(16), field(24)), (field(32), field(40))]
            guard sections.allSatisfy({ $0.0 >= 0 && $0.1 >= 0 && $0.0 <= size && $0.1 <= size - $0.0 }) else { return }
            var sum = Checksum()
            sum.update(UnsafeRawBufferPointer(rebasing: raw[0..<72]))
            for (offset, count) in sections { sum.update(UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + count)])) }
            raw.storeBytes(of: sum.value, toByteOffset: 72, as: UInt64.self)
        }
    }
    bytes.withUnsafeBufferPointer { fixed in withMappedInput(fixed.baseAddress!, size) { file in
        let reader = try ModelFileReader(file: file)
        for key in reader.tensorKeys { touch(reader.tensor(key)) }
        for name in ["text_encoder", "unet", "vae", "scheduler"] { _ = try? reader.config(name) }
        _ = reader.strings("tokenizer.merges")
        _ = reader.int("tokenizer.pad_token_id")
        blackHole += reader.verify().count
    } }
    return 0
}
