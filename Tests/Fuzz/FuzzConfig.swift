// libFuzzer target: JSON, and the model and scheduler configs read from it.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let json = try? JSON(parsing: UnsafeBufferPointer(start: data, count: size)) else { return 0 }
    _ = try? CLIPTextConfig(json: json)
    _ = try? UNet2DConditionConfig(json: json)
    _ = try? AutoencoderKLConfig(json: json)
    if let config = try? SchedulerConfig(diffusersConfig: schedulerConfigValues(json)) {
        // Building every scheduler from the config sizes its tables by config values.
        for kind in SchedulerKind.allCases { _ = try? makeScheduler(kind, config: config, steps: 4) }
    }
    return 0
}
