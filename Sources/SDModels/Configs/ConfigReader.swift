import SDFormat

/// Reads a diffusers/transformers config.json: a key that is absent or null takes the
/// reference default; a key of the wrong type or an unsupported value throws `ModelError`.
struct ConfigReader {
    let json: JSON
    let component: String

    init(_ json: JSON, component: String) throws {
        guard json.object != nil else { throw ModelError(component, "config is not a JSON object") }
        self.json = json
        self.component = component
    }

    func fail(_ message: String) -> ModelError { ModelError(component, message) }

    /// The value of `key`, nil when absent or null.
    func value(_ key: String) -> JSON? {
        guard let v = json[key], !v.isNull else { return nil }
        return v
    }

    func int(_ key: String, _ defaultValue: Int) throws -> Int {
        try optionalInt(key) ?? defaultValue
    }

    func optionalInt(_ key: String) throws -> Int? {
        guard let v = value(key) else { return nil }
        guard let n = v.int else { throw fail("\(key) must be an integer, got \(v.serialized)") }
        return n
    }

    func positiveInt(_ key: String, _ defaultValue: Int) throws -> Int {
        let n = try int(key, defaultValue)
        guard n > 0 else { throw fail("\(key) must be positive, got \(n)") }
        return n
    }

    func double(_ key: String, _ defaultValue: Double) throws -> Double {
        guard let v = value(key) else { return defaultValue }
        guard let d = v.double, d.isFinite else { throw fail("\(key) must be a number, got \(v.serialized)") }
        return d
    }

    func bool(_ key: String, _ defaultValue: Bool) throws -> Bool {
        guard let v = value(key) else { return defaultValue }
        guard let b = v.bool else { throw fail("\(key) must be true or false, got \(v.serialized)") }
        return b
    }

    func string(_ key: String, _ defaultValue: String) throws -> String {
        guard let v = value(key) else { return defaultValue }
        guard let s = v.string else { throw fail("\(key) must be a string, got \(v.serialized)") }
        return s
    }

    func strings(_ key: String, _ defaultValue: [String]) throws -> [String] {
        guard let v = value(key) else { return defaultValue }
        guard let items = v.array, !items.isEmpty else { throw fail("\(key) must be a non-empty list of strings") }
        return try items.map {
            guard let s = $0.string else { throw fail("\(key) must be a list of strings, got \(v.serialized)") }
            return s
        }
    }

    func positiveInts(_ key: String, _ defaultValue: [Int]) throws -> [Int] {
        guard let v = value(key) else { return defaultValue }
        guard let items = v.array, !items.isEmpty else { throw fail("\(key) must be a non-empty list of integers") }
        return try items.map {
            guard let n = $0.int, n > 0 else { throw fail("\(key) must be a list of positive integers, got \(v.serialized)") }
            return n
        }
    }

    /// diffusers' "int or one per block" parameters, expanded to `count` entries.
    func perBlock(_ key: String, _ defaultValue: Int, count: Int) throws -> [Int] {
        guard let v = value(key) else { return Array(repeating: defaultValue, count: count) }
        if let n = v.int {
            guard n > 0 else { throw fail("\(key) must be positive, got \(n)") }
            return Array(repeating: n, count: count)
        }
        guard let items = v.array else { throw fail("\(key) must be an integer or a list, got \(v.serialized)") }
        guard items.count == count else {
            throw fail("\(key) has \(items.count) entries but there are \(count) blocks")
        }
        return try items.map {
            if $0.array != nil { throw fail("\(key) with nested lists is not supported yet") }
            guard let n = $0.int, n > 0 else { throw fail("\(key) must hold positive integers, got \(v.serialized)") }
            return n
        }
    }

    /// Features we do not implement must be absent, null, or at their neutral value.
    func requireAbsent(_ key: String, _ feature: String) throws {
        guard let v = value(key) else { return }
        throw fail("\(feature) (\(key) = \(v.serialized)) is not supported yet")
    }

    func requireValue(_ key: String, in allowed: [JSON], _ feature: String) throws {
        guard let v = value(key), !allowed.contains(v) else { return }
        throw fail("\(feature) (\(key) = \(v.serialized)) is not supported yet")
    }
}
