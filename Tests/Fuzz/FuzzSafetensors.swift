// libFuzzer target: the safetensors header (length, JSON) and tensor table.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafetensors(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    withMappedInput(data, size) { file in
        let st = try SafetensorsFile(file: file)
        for key in st.tensorKeys { touch(st.tensor(key)) }
        blackHole += st.metadata.count
    }
    return 0
}
