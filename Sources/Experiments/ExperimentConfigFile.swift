import Foundation
import Support
import Yams

/// A nested section of the experiment configuration: its stored properties, in snake_case, are
/// its keys (found by reflection, so a new setting needs no list of keys to be kept in step).
public protocol ConfigSection {}

/// A bad configuration value: names the file (or flag), the dotted key and what was expected.
public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public var source: String?
    public var key: String
    /// The offending value, for range errors ("1.5 is out of range: expected ...").
    public var value: String?
    public var message: String

    public init(source: String? = nil, key: String, value: String? = nil, _ message: String) {
        self.source = source
        self.key = key
        self.value = value
        self.message = message
    }

    /// A value outside its range.
    public static func outOfRange(_ key: String, _ value: Any, expected: String) -> ConfigError {
        ConfigError(key: key, value: "\(value)", "is out of range: expected \(expected)")
    }

    public var description: String { (source.map { "\($0): " } ?? "") + "\(key): " + (value.map { "\($0) " } ?? "") + message }
}

/// Experiment configurations as YAML (BackdoorBench's config style) and JSON: layered
/// (defaults <- preset <- file <- flags), strictly checked (an unknown key or a value of the wrong
/// type is an error naming the file and the key), and written back in declaration order.
public enum ExperimentConfigFile {
    /// The presets shipped in Presets/*.yaml, by name.
    public static var presetNames: [String] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: presetsFolder)) ?? []
        return files.filter { $0.hasSuffix(".yaml") }.map { String($0.dropLast(5)) }.sorted()
    }

    /// Presets/ among the target's resources (copied beside the built binary).
    static var presetsFolder: String {
        (Bundle.module.resourceURL ?? Bundle.module.bundleURL).appendingPathComponent("Presets").path
    }

    public static func presetText(_ name: String) throws -> String {
        guard presetNames.contains(name),
              let data = FileManager.default.contents(atPath: (presetsFolder as NSString).appendingPathComponent(name + ".yaml")) else {
            throw ConfigError(key: "preset", "unknown preset \"\(name)\"; expected one of " + presetNames.joined(separator: ", "))
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// The source name of the flags' layer in errors.
    public static let commandLine = "the command line"

    /// The layers of a preset: a preset file may start from another (`preset: quick`).
    static func presetLayers(_ name: String, seen: [String] = []) throws -> [(source: String, values: [String: Any])] {
        guard !seen.contains(name) else {
            throw ConfigError(source: "Presets/\(name).yaml", key: "preset", "presets start from each other in a cycle: "
                + (seen + [name]).joined(separator: " -> "))
        }
        let source = "preset \(name) (Presets/\(name).yaml)"
        var values = try parseYAML(try presetText(name), source: source)
        let base = try values.removeValue(forKey: "preset").map { try presetName($0, source: source) }
        return try (base.map { try presetLayers($0, seen: seen + [name]) } ?? []) + [(source, values)]
    }

    private static func presetName(_ value: Any, source: String) throws -> String {
        guard let name = value as? String else { throw ConfigError(source: source, key: "preset", "expected a preset name") }
        return name
    }

    /// The settings of `preset` (a config file's own `preset:` key wins), then the file, then the
    /// flags (dotted keys as in the file: `training.epochs`).
    public static func settings(preset: String, configFile: String? = nil, flags: [String: Any] = [:]) throws -> ExperimentSettings {
        var file = try configFile.map { try read(path: $0) }
        let chosen = try file?.removeValue(forKey: "preset").map { try presetName($0, source: configFile!) } ?? preset
        var layers = try presetLayers(chosen)
        if let configFile, let file { layers.append((configFile, file)) }
        var flagTree: [String: Any] = [:]
        for (dotted, value) in flags {
            flagTree = setting(flagTree, dotted.split(separator: ".").map(String.init)[...], to: value)
        }
        layers.append((commandLine, flagTree))
        var merged = plain(ExperimentSettings(), key: { $0 }) as! [String: Any]
        for layer in layers {
            merged = deepMerge(merged, try camelCase(layer.values, section: ExperimentSettings(), path: "", source: layer.source)
                as! [String: Any])
        }
        merged["preset"] = chosen
        var settings = try decode(merged, source: configFile ?? "preset \(chosen)")
        settings.preset = chosen
        // `--poison-rate` clears every attack's own rate, which may leave an attack with no settings.
        settings.attack.settings = settings.attack.settings.filter { !$0.value.isEmpty }
        do {
            try settings.validate()
            try settings.model.useReferenceWidthOutsideResNets()
        } catch var error as ConfigError {
            // Which layer set the key: the last one that has it.
            let path = error.key.split(separator: ".").map(String.init)
            error.source = layers.last { has($0.values, path) }?.source ?? "preset \(chosen)"
            throw error
        }
        return settings
    }

    /// `tree` with the value at `path` set; a null is kept (it clears the key of earlier layers).
    private static func setting(_ tree: [String: Any], _ path: ArraySlice<String>, to value: Any) -> [String: Any] {
        guard let key = path.first else { return tree }
        var out = tree
        out[key] = path.count == 1 ? value : setting(out[key] as? [String: Any] ?? [:], path.dropFirst(), to: value)
        return out
    }

    private static func has(_ values: [String: Any], _ path: [String]) -> Bool {
        guard let first = path.first, let value = values[first] else { return false }
        if path.count == 1 { return true }
        return (value as? [String: Any]).map { has($0, Array(path.dropFirst())) } ?? false
    }

    /// A YAML document as a mapping (an empty document is an empty mapping).
    public static func parseYAML(_ text: String, source: String) throws -> [String: Any] {
        let object: Any?
        do { object = try Yams.load(yaml: text) } catch {
            throw ConfigError(source: source, key: "(document)", "is not valid YAML: \(error)")
        }
        guard let object else { return [:] }
        guard let mapping = stringKeyed(object) as? [String: Any] else {
            throw ConfigError(source: source, key: "(document)", "expected a mapping of settings at the top level")
        }
        return mapping
    }

    public static func read(path: String) throws -> [String: Any] {
        guard let data = FileManager.default.contents(atPath: path) else { throw FileError(path, "cannot read the config file") }
        return try parseYAML(String(decoding: data, as: UTF8.self), source: path)
    }

    /// The settings as YAML, sections in declaration order (what `--print-config` shows and a
    /// `--config` file reads back unchanged).
    public static func yaml(_ settings: ExperimentSettings) throws -> String {
        try Yams.serialize(node: node(settings))
    }

    /// The settings (or a section of them) as a JSON object with snake_case keys, for config.json files.
    public static func jsonObject(_ section: ConfigSection) -> [String: Any] {
        plain(section, key: snake) as! [String: Any]
    }

    /// Decodes a configuration written by `jsonObject` (config.json, summary.json's "config").
    public static func settings(json: [String: Any], source: String) throws -> ExperimentSettings {
        let base = plain(ExperimentSettings(), key: { $0 }) as! [String: Any]
        let values = try camelCase(json, section: ExperimentSettings(), path: "", source: source) as! [String: Any]
        return try decode(deepMerge(base, values), source: source)
    }

    // MARK: Keys

    static func snake(_ name: String) -> String {
        var out = ""
        for c in name {
            if c.isUppercase { out += "_" + c.lowercased() } else { out.append(c) }
        }
        return out
    }

    /// (snake_case key, child value) of a section's stored properties, in declaration order.
    static func keys(of section: Any) -> [(key: String, value: Any)] {
        Mirror(reflecting: section).children.compactMap { child in child.label.map { (snake($0), child.value) } }
    }

    private static func camelCase(_ object: Any, section: Any, path: String, source: String) throws -> Any {
        guard let mapping = object as? [String: Any] else {
            throw ConfigError(source: source, key: path.isEmpty ? "(document)" : path, "expected a mapping of settings")
        }
        let known = keys(of: section)
        var out: [String: Any] = [:]
        for (key, value) in mapping {
            let dotted = path.isEmpty ? key : path + "." + key
            guard let index = known.firstIndex(where: { $0.key == key }) else {
                throw ConfigError(source: source, key: dotted, "unknown key; expected one of "
                    + known.map(\.key).joined(separator: ", "))
            }
            let label = Mirror(reflecting: section).children.compactMap(\.label)[index]
            let child = known[index].value
            out[label] = child is ConfigSection ? try camelCase(value, section: child, path: dotted, source: source) : value
        }
        return out
    }

    /// YAML's mappings (keyed by AnyHashable) as string-keyed ones, recursively.
    private static func stringKeyed(_ object: Any) -> Any {
        switch object {
        case let mapping as [AnyHashable: Any]:
            return Dictionary(uniqueKeysWithValues: mapping.map { ("\($0.key.base)", stringKeyed($0.value)) })
        case let list as [Any]: return list.map(stringKeyed)
        default: return object
        }
    }

    // MARK: Values

    /// A section as plain JSON values by reflection: sections and dictionaries as mappings (section
    /// keys through `key`), arrays as arrays, nil as null.
    static func plain(_ value: Any, key: (String) -> String) -> Any {
        // An optional section passes `is ConfigSection` while still wrapped: unwrap it first.
        if Mirror(reflecting: value).displayStyle == .optional {
            return Mirror(reflecting: value).children.first.map { plain($0.value, key: key) } ?? NSNull()
        }
        if value is ConfigSection {
            var out: [String: Any] = [:]
            for child in Mirror(reflecting: value).children {
                if let label = child.label { out[key(label)] = plain(child.value, key: key) }
            }
            return out
        }
        let mirror = Mirror(reflecting: value)
        switch mirror.displayStyle {
        case .optional: return mirror.children.first.map { plain($0.value, key: key) } ?? NSNull()
        case .collection: return mirror.children.map { plain($0.value, key: key) }
        case .dictionary:
            var out: [String: Any] = [:]
            for (name, inner) in dictionaryPairs(mirror) { out[name] = plain(inner, key: key) }
            return out
        default: return value
        }
    }

    /// The YAML node of a value: sections in declaration order, free mappings sorted by key,
    /// lists in flow style.
    static func node(_ value: Any) -> Node {
        if Mirror(reflecting: value).displayStyle == .optional {
            return Mirror(reflecting: value).children.first.map { node($0.value) } ?? Node("null", Tag(.null))
        }
        if value is ConfigSection {
            return .mapping(Node.Mapping(Mirror(reflecting: value).children.compactMap { child in
                child.label.map { (Node(snake($0)), node(child.value)) }
            }))
        }
        let mirror = Mirror(reflecting: value)
        switch mirror.displayStyle {
        case .optional: return mirror.children.first.map { node($0.value) } ?? Node("null", Tag(.null))
        case .collection: return .sequence(Node.Sequence(mirror.children.map { node($0.value) }, Tag(.seq), .flow))
        case .dictionary:
            let pairs = dictionaryPairs(mirror).sorted { $0.key < $1.key }
            return .mapping(Node.Mapping(pairs.map { (Node($0.key), node($0.value)) }))
        default:
            switch value {
            case let flag as Bool: return Node(flag ? "true" : "false", Tag(.bool))
            case let number as Double: return Node("\(number)", Tag(.float))
            case let text as String: return Node(text, Tag(.str), .doubleQuoted)
            default: return Node("\(value)", Tag(.int))
            }
        }
    }

    private static func dictionaryPairs(_ mirror: Mirror) -> [(key: String, value: Any)] {
        mirror.children.map { pair in
            let parts = Array(Mirror(reflecting: pair.value).children)
            return ("\(parts[0].value)", parts[1].value)
        }
    }

    /// `overlay` over `base`: mappings merge key by key, anything else (lists included) replaces;
    /// an explicit null removes the key (an optional setting back to none).
    static func deepMerge(_ base: [String: Any], _ overlay: [String: Any]) -> [String: Any] {
        var out = base
        for (key, value) in overlay {
            if value is NSNull {
                out.removeValue(forKey: key)
            } else if let inner = value as? [String: Any] {
                // Nulls inside a new mapping clear nothing and are dropped too.
                out[key] = deepMerge(out[key] as? [String: Any] ?? [:], inner)
            } else {
                out[key] = value
            }
        }
        return out
    }

    private static func decode(_ merged: [String: Any], source: String) throws -> ExperimentSettings {
        let data = try JSONSerialization.data(withJSONObject: merged)
        do {
            return try JSONDecoder().decode(ExperimentSettings.self, from: data)
        } catch let error as DecodingError {
            switch error {
            case .typeMismatch(let type, let context), .valueNotFound(let type, let context):
                throw ConfigError(source: source, key: dotted(context.codingPath), "expected \(describe(type))")
            case .dataCorrupted(let context):
                throw ConfigError(source: source, key: dotted(context.codingPath), context.debugDescription)
            case .keyNotFound(let key, let context):
                throw ConfigError(source: source, key: dotted(context.codingPath + [key]), "is missing")
            @unknown default:
                throw ConfigError(source: source, key: "(document)", "\(error)")
            }
        }
    }

    private static func dotted(_ path: [CodingKey]) -> String {
        path.map { $0.intValue.map { "[\($0)]" } ?? snake($0.stringValue) }.joined(separator: ".")
            .replacingOccurrences(of: ".[", with: "[")
    }

    private static func describe(_ type: Any.Type) -> String {
        switch type {
        case is Int.Type, is UInt64.Type: return "an integer"
        case is Double.Type, is Float.Type: return "a number"
        case is Bool.Type: return "true or false"
        case is String.Type: return "a string"
        default: return "\(type)".contains("Array") ? "a list" : "a mapping"
        }
    }
}
