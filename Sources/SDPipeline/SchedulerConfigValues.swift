import SDFormat
import SDSchedulers

/// A stored `scheduler_config.json` as the values `SchedulerConfig(diffusersConfig:)` reads.
/// A file of its own (no other pipeline types) so the config fuzz target can compile it.
func schedulerConfigValues(_ json: JSON) -> [String: SchedulerConfig.Value] {
    var values: [String: SchedulerConfig.Value] = [:]
    for (key, value) in json.object ?? [] {
        switch value {
        case .null: values[key] = .null
        case .bool(let b): values[key] = .bool(b)
        case .number(let n): values[key] = n == n.rounded() && abs(n) < 1e15 ? .int(Int(n)) : .double(n)
        case .string(let s): values[key] = .string(s)
        case .array(let items): values[key] = .doubles(items.compactMap(\.double))
        case .object: break
        }
    }
    return values
}
