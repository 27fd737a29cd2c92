import Foundation
import Support

/// A module-qualified Python name that a pickle may refer to (`GLOBAL` / `STACK_GLOBAL`); the
/// reader accepts only those in the caller's allow-list.
public struct PickleGlobal: Hashable, Sendable, CustomStringConvertible {
    public let module: String
    public let name: String
    public init(_ module: String, _ name: String) {
        self.module = module
        self.name = name
    }
    public var description: String { "\(module).\(name)" }
}

/// The tree a pickle describes, built without executing anything: calls (`reduce`), object
/// construction (`newObject`), state (`build`) and item insertion into non-dict objects
/// (`setItems`, `appends`) stay symbolic for the caller to interpret.
public indirect enum PickleValue: Equatable {
    /// One key/value pair of a dict, kept in pickle order.
    public struct Entry: Equatable {
        public var key: PickleValue
        public var value: PickleValue
        public init(key: PickleValue, value: PickleValue) {
            self.key = key
            self.value = value
        }
    }

    case none
    case bool(Bool)
    case int(Int)
    /// An integer beyond 64 bits: little-endian two's-complement bytes as pickled.
    case bigInt([UInt8])
    case float(Double)
    case string(String)
    /// bytes, bytearray, and Python 2 `str` (BINSTRING), as pickled by Python 2 (e.g. CIFAR batches).
    case bytes([UInt8])
    case list([PickleValue])
    case tuple([PickleValue])
    case dict([Entry])
    case global(PickleGlobal)
    case reduce(callable: PickleValue, arguments: PickleValue)
    case newObject(type: PickleValue, arguments: PickleValue)
    case build(object: PickleValue, state: PickleValue)
    /// SETITEM(S) on something that is not a plain dict (e.g. an `OrderedDict` made by REDUCE).
    case setItems(object: PickleValue, entries: [Entry])
    /// APPEND(S) on something that is not a plain list.
    case appends(object: PickleValue, items: [PickleValue])
    case persistentID(PickleValue)
}

/// A pickle that cannot be read: unknown opcode, refused global, truncation, malformed stack.
public struct PickleError: Error, CustomStringConvertible {
    public let offset: Int
    public let message: String
    /// Byte offset of the failing opcode; -1 for problems of the finished tree (size, nesting).
    public var description: String { offset >= 0 ? "pickle: \(message) (at byte \(offset))" : "pickle: \(message)" }
}

/// Restricted reader for pickles of protocols 2 to 5 (and the protocol-1 opcodes Python 2 used):
/// builds a `PickleValue` tree, executes nothing, and refuses every global outside the allow-list.
public enum Pickle {
    /// Globals of numpy arrays, dtypes and scalars (numpy 1 `numpy.core` and numpy 2 `numpy._core`).
    public static let numpyGlobals: Set<PickleGlobal> = {
        var set: Set<PickleGlobal> = [PickleGlobal("numpy", "ndarray"), PickleGlobal("numpy", "dtype")]
        set.formUnion(bytesGlobals)
        for package in ["numpy.core", "numpy._core"] {
            set.insert(PickleGlobal(package + ".multiarray", "_reconstruct"))
            set.insert(PickleGlobal(package + ".multiarray", "scalar"))
            set.insert(PickleGlobal(package + ".numeric", "_frombuffer"))
        }
        return set
    }()

    /// How Python 3 writes `bytes` at protocol 2 (torch.save's default): `_codecs.encode(text,
    /// "latin1")`, and `bytes()` for empty ones. Harmless; see `PickleValue.bytesValue`.
    public static let bytesGlobals: Set<PickleGlobal> = [
        PickleGlobal("_codecs", "encode"), PickleGlobal("builtins", "bytes"),
    ]

    /// Parses a whole pickle held in memory.
    public static func parse(_ bytes: [UInt8], allowedGlobals: Set<PickleGlobal>) throws -> PickleValue {
        let (value, end) = try parsePrefix(bytes, from: 0, allowedGlobals: allowedGlobals)
        guard end == bytes.count else {
            throw PickleError(offset: end, message: "\(bytes.count - end) unexpected bytes after STOP")
        }
        return value
    }

    /// Parses one pickle starting at `offset` of a buffer holding several in a row (torch's
    /// legacy format); returns the value and the offset after its STOP.
    public static func parsePrefix(_ bytes: [UInt8], from offset: Int, allowedGlobals: Set<PickleGlobal>) throws -> (PickleValue, Int) {
        var machine = Machine(bytes: bytes, allowedGlobals: allowedGlobals)
        machine.position = offset
        let root = try machine.run()
        var budget = Limits.maximumNodes
        return (try root.value(depth: 0, budget: &budget, visiting: []), machine.position)
    }

    /// Reads and parses a pickle file; errors are `FileError`s naming the file.
    public static func read(path: String, allowedGlobals: Set<PickleGlobal>) throws -> PickleValue {
        let bytes = try InputFile.bytes(path, what: "pickle file")
        do {
            return try parse(bytes, allowedGlobals: allowedGlobals)
        } catch let error as PickleError {
            throw FileError(path, error.description)
        }
    }

    enum Limits {
        /// Bounds the tree a hostile pickle can expand into through shared memo references. The
        /// fuzzer's 576-byte zip reached 20,000,000 in 3.4 s and 660 MB before it was refused;
        /// real checkpoints and CIFAR batches hold tens of thousands of values.
        static let maximumNodes = 2_000_000
        /// Bounds nesting so that converting and comparing trees cannot overflow the stack.
        static let maximumDepth = 500
    }
}

/// Mutable object during parsing: pickles mutate objects after memoizing them (APPENDS,
/// SETITEMS, BUILD), so memo references must see the final state.
private final class Node {
    enum Kind {
        case leaf(PickleValue)
        case list, tuple, dict
        case reduce, newObject, build, setItems, appends, persistentID
    }
    var kind: Kind
    /// list/tuple: elements; dict/setItems: alternating keys and values (setItems: object first);
    /// reduce/newObject/build: the two operands; appends: object then items; persistentID: one.
    var children: [Node]

    init(_ kind: Kind, _ children: [Node] = []) {
        self.kind = kind
        self.children = children
    }

    /// Frees the subtree iteratively: the default release is recursive and a hostile pickle
    /// nesting 40,000 lists (an 80 KB file) overflowed the stack while its tree was freed.
    deinit {
        guard !children.isEmpty else { return }
        var pending = children
        children = []
        while var node = pending.popLast() {
            // A node shared through the memo is freed later, by whoever releases it last.
            if isKnownUniquelyReferenced(&node) {
                pending += node.children
                node.children = []
            }
        }
    }

    /// Moves this node's content into a new child so this node can become a wrapper of it
    /// (e.g. `build(object, state)`) while memo references to it stay valid.
    func wrap(_ kind: Kind, adding extra: [Node]) {
        let inner = Node(self.kind, children)
        self.kind = kind
        children = [inner] + extra
    }

    func value(depth: Int, budget: inout Int, visiting: Set<ObjectIdentifier>) throws -> PickleValue {
        budget -= 1
        guard budget >= 0 else {
            throw PickleError(offset: -1, message: "pickle expands to more than \(Pickle.Limits.maximumNodes) values")
        }
        guard depth < Pickle.Limits.maximumDepth else {
            throw PickleError(offset: -1, message: "pickle nests deeper than \(Pickle.Limits.maximumDepth) levels")
        }
        if case .leaf(let value) = kind { return value }
        let id = ObjectIdentifier(self)
        guard !visiting.contains(id) else {
            throw PickleError(offset: -1, message: "pickle contains a self-referencing object")
        }
        let inside = visiting.union([id])
        let values = try children.map { try $0.value(depth: depth + 1, budget: &budget, visiting: inside) }
        func entries(_ flat: ArraySlice<PickleValue>) -> [PickleValue.Entry] {
            stride(from: flat.startIndex, to: flat.endIndex, by: 2).map {
                PickleValue.Entry(key: flat[$0], value: flat[$0 + 1])
            }
        }
        switch kind {
        case .leaf(let value): return value
        case .list: return .list(values)
        case .tuple: return .tuple(values)
        case .dict: return .dict(entries(values[...]))
        case .reduce: return .reduce(callable: values[0], arguments: values[1])
        case .newObject: return .newObject(type: values[0], arguments: values[1])
        case .build: return .build(object: values[0], state: values[1])
        case .setItems: return .setItems(object: values[0], entries: entries(values.dropFirst()))
        case .appends: return .appends(object: values[0], items: Array(values.dropFirst()))
        case .persistentID: return .persistentID(values[0])
        }
    }
}

/// The pickle virtual machine, minus every side effect.
private struct Machine {
    let bytes: [UInt8]
    let allowedGlobals: Set<PickleGlobal>
    var position = 0
    var opcodeOffset = 0
    var stack: [Node] = []
    var marks: [Int] = []
    var memo: [Int: Node] = [:]
    var protocolVersion: UInt64 = 0

    /// Python 2 module names that Python 3's unpickler maps back (from `_compat_pickle`).
    static let python2Modules: [String: String] = [
        "__builtin__": "builtins", "copy_reg": "copyreg", "commands": "subprocess", "Queue": "queue",
        "cPickle": "pickle", "UserDict": "collections", "UserList": "collections", "UserString": "collections",
        "exceptions": "builtins", "urllib2": "urllib.request", "httplib": "http.client", "cStringIO": "io",
        "StringIO": "io", "thread": "_thread", "dummy_thread": "_dummy_thread", "repr": "reprlib",
    ]

    init(bytes: [UInt8], allowedGlobals: Set<PickleGlobal>) {
        self.bytes = bytes
        self.allowedGlobals = allowedGlobals
    }

    func fail(_ message: String) -> PickleError { PickleError(offset: opcodeOffset, message: message) }

    mutating func take(_ count: Int, for what: String) throws -> ArraySlice<UInt8> {
        guard count >= 0, count <= bytes.count - position else {
            throw fail("truncated: \(what) needs \(count) bytes, \(bytes.count - position) left")
        }
        defer { position += count }
        return bytes[position..<(position + count)]
    }

    mutating func unsigned(_ count: Int, for what: String) throws -> UInt64 {
        var result: UInt64 = 0
        for (i, byte) in try take(count, for: what).enumerated() { result |= UInt64(byte) << (8 * UInt64(i)) }
        return result
    }

    mutating func length(_ count: Int, for what: String) throws -> Int {
        let value = try unsigned(count, for: what)
        guard value <= UInt64(bytes.count - position) else {
            throw fail("truncated: \(what) of \(value) bytes, \(bytes.count - position) left")
        }
        return Int(value)
    }

    mutating func line(for what: String) throws -> String {
        guard let end = bytes[position...].firstIndex(of: 0x0A) else { throw fail("truncated: \(what) has no end of line") }
        defer { position = end + 1 }
        return String(decoding: bytes[position..<end], as: UTF8.self)
    }

    mutating func text(_ count: Int, for what: String) throws -> String {
        guard let string = String(validating: try take(count, for: what), as: UTF8.self) else {
            throw fail("\(what) is not valid UTF-8")
        }
        return string
    }

    mutating func pop(for what: String) throws -> Node {
        guard stack.count > (marks.last ?? 0) else { throw fail("\(what) needs a value but the stack is empty") }
        return stack.removeLast()
    }

    mutating func popToMark(for what: String) throws -> [Node] {
        guard let mark = marks.popLast() else { throw fail("\(what) without a MARK") }
        defer { stack.removeSubrange(mark...) }
        return Array(stack[mark...])
    }

    mutating func push(_ value: PickleValue) { stack.append(Node(.leaf(value))) }

    mutating func global(_ module: String, _ name: String) throws {
        // Protocols 0-2 spell Python 3 modules the Python 2 way; Python maps them back on load.
        let global = PickleGlobal(protocolVersion < 3 ? Machine.python2Modules[module] ?? module : module, name)
        guard allowedGlobals.contains(global) else { throw fail("refusing global \(global) (not in the allow-list)") }
        push(.global(global))
    }

    mutating func memoGet(_ key: Int) throws {
        guard let node = memo[key] else { throw fail("memo key \(key) was never stored") }
        stack.append(node)
    }

    mutating func memoPut(_ key: Int) throws {
        guard let top = stack.last, stack.count > (marks.last ?? 0) else { throw fail("PUT with an empty stack") }
        memo[key] = top
    }

    mutating func appendItems(_ items: [Node], to target: Node) {
        switch target.kind {
        case .list, .appends: target.children += items
        default: target.wrap(.appends, adding: items)
        }
    }

    mutating func setItems(_ flat: [Node], on target: Node) throws {
        guard flat.count % 2 == 0 else { throw fail("SETITEMS with an odd number of keys and values") }
        switch target.kind {
        case .dict, .setItems: target.children += flat
        default: target.wrap(.setItems, adding: flat)
        }
    }

    mutating func run() throws -> Node {
        while true {
            opcodeOffset = position
            guard position < bytes.count else { throw fail("truncated: no STOP opcode before the end") }
            let opcode = bytes[position]
            position += 1
            switch opcode {
            case 0x80: // PROTO
                let version = try unsigned(1, for: "PROTO")
                guard version <= 5 else { throw fail("unsupported pickle protocol \(version)") }
                protocolVersion = version
            case 0x95: _ = try take(8, for: "FRAME") // frames only group opcodes
            case 0x2E: // STOP
                guard marks.isEmpty else { throw fail("STOP with an open MARK") }
                guard stack.count == 1 else { throw fail("STOP with \(stack.count) values on the stack, expected 1") }
                return stack[0]
            case 0x28: marks.append(stack.count) // MARK
            case 0x30: _ = try pop(for: "POP") // POP
            case 0x31: _ = try popToMark(for: "POP_MARK") // POP_MARK
            case 0x32: // DUP
                let top = try pop(for: "DUP")
                stack += [top, top]

            case 0x4E: push(.none) // NONE
            case 0x88: push(.bool(true)) // NEWTRUE
            case 0x89: push(.bool(false)) // NEWFALSE
            case 0x4A: push(.int(Int(Int32(truncatingIfNeeded: try unsigned(4, for: "BININT"))))) // BININT
            case 0x4B: push(.int(Int(try unsigned(1, for: "BININT1")))) // BININT1
            case 0x4D: push(.int(Int(try unsigned(2, for: "BININT2")))) // BININT2
            case 0x8A: try pushLong(try length(1, for: "LONG1")) // LONG1
            case 0x8B: // LONG4
                let count = Int(Int32(truncatingIfNeeded: try unsigned(4, for: "LONG4")))
                guard count >= 0, count <= bytes.count - position else { throw fail("truncated: LONG4 of \(count) bytes") }
                try pushLong(count)
            case 0x49: // INT (text; "01"/"00" are True/False in protocol 0)
                let text = try line(for: "INT")
                if text == "01" { push(.bool(true)) } else if text == "00" { push(.bool(false)) } else {
                    guard let value = Int(text) else { throw fail("INT with non-integer text \"\(text)\"") }
                    push(.int(value))
                }
            case 0x47: // BINFLOAT (big-endian)
                let raw = try take(8, for: "BINFLOAT").reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                push(.float(Double(bitPattern: raw)))

            case 0x58: push(.string(try text(try length(4, for: "BINUNICODE"), for: "BINUNICODE"))) // BINUNICODE
            case 0x8C: push(.string(try text(try length(1, for: "SHORT_BINUNICODE"), for: "SHORT_BINUNICODE"))) // SHORT_BINUNICODE
            case 0x8D: push(.string(try text(try length(8, for: "BINUNICODE8"), for: "BINUNICODE8"))) // BINUNICODE8
            case 0x54: // BINSTRING (Python 2 str, signed length)
                let count = Int(Int32(truncatingIfNeeded: try unsigned(4, for: "BINSTRING")))
                push(.bytes(Array(try take(count, for: "BINSTRING"))))
            case 0x55: push(.bytes(Array(try take(try length(1, for: "SHORT_BINSTRING"), for: "SHORT_BINSTRING")))) // SHORT_BINSTRING
            case 0x42: push(.bytes(Array(try take(try length(4, for: "BINBYTES"), for: "BINBYTES")))) // BINBYTES
            case 0x43: push(.bytes(Array(try take(try length(1, for: "SHORT_BINBYTES"), for: "SHORT_BINBYTES")))) // SHORT_BINBYTES
            case 0x8E: push(.bytes(Array(try take(try length(8, for: "BINBYTES8"), for: "BINBYTES8")))) // BINBYTES8
            case 0x96: push(.bytes(Array(try take(try length(8, for: "BYTEARRAY8"), for: "BYTEARRAY8")))) // BYTEARRAY8

            case 0x5D: stack.append(Node(.list)) // EMPTY_LIST
            case 0x7D: stack.append(Node(.dict)) // EMPTY_DICT
            case 0x29: stack.append(Node(.tuple)) // EMPTY_TUPLE
            case 0x6C: stack.append(Node(.list, try popToMark(for: "LIST"))) // LIST
            case 0x74: stack.append(Node(.tuple, try popToMark(for: "TUPLE"))) // TUPLE
            case 0x64: // DICT
                let flat = try popToMark(for: "DICT")
                guard flat.count % 2 == 0 else { throw fail("DICT with an odd number of keys and values") }
                stack.append(Node(.dict, flat))
            case 0x85, 0x86, 0x87: // TUPLE1, TUPLE2, TUPLE3
                let count = Int(opcode - 0x84)
                guard stack.count - (marks.last ?? 0) >= count else { throw fail("TUPLE\(count) needs \(count) values on the stack") }
                let items = Array(stack.suffix(count))
                stack.removeLast(count)
                stack.append(Node(.tuple, items))
            case 0x61: // APPEND
                let item = try pop(for: "APPEND")
                appendItems([item], to: try top(for: "APPEND"))
            case 0x65: // APPENDS
                let items = try popToMark(for: "APPENDS")
                appendItems(items, to: try top(for: "APPENDS"))
            case 0x73: // SETITEM
                let value = try pop(for: "SETITEM")
                let key = try pop(for: "SETITEM")
                try setItems([key, value], on: try top(for: "SETITEM"))
            case 0x75: // SETITEMS
                let flat = try popToMark(for: "SETITEMS")
                try setItems(flat, on: try top(for: "SETITEMS"))

            case 0x68: try memoGet(Int(try unsigned(1, for: "BINGET"))) // BINGET
            case 0x6A: try memoGet(Int(try unsigned(4, for: "LONG_BINGET"))) // LONG_BINGET
            case 0x67: // GET (text)
                let text = try line(for: "GET")
                guard let key = Int(text) else { throw fail("GET with non-integer key \"\(text)\"") }
                try memoGet(key)
            case 0x71: try memoPut(Int(try unsigned(1, for: "BINPUT"))) // BINPUT
            case 0x72: try memoPut(Int(try unsigned(4, for: "LONG_BINPUT"))) // LONG_BINPUT
            case 0x70: // PUT (text)
                let text = try line(for: "PUT")
                guard let key = Int(text) else { throw fail("PUT with non-integer key \"\(text)\"") }
                try memoPut(key)
            case 0x94: try memoPut(memo.count) // MEMOIZE

            case 0x63: // GLOBAL
                let module = try line(for: "GLOBAL module")
                let name = try line(for: "GLOBAL name")
                try global(module, name)
            case 0x93: // STACK_GLOBAL
                let nameNode = try pop(for: "STACK_GLOBAL")
                let moduleNode = try pop(for: "STACK_GLOBAL")
                guard case .leaf(.string(let module)) = moduleNode.kind, case .leaf(.string(let name)) = nameNode.kind else {
                    throw fail("STACK_GLOBAL needs two strings")
                }
                try global(module, name)
            case 0x52: // REDUCE
                let arguments = try pop(for: "REDUCE")
                let callable = try pop(for: "REDUCE")
                stack.append(Node(.reduce, [callable, arguments]))
            case 0x81: // NEWOBJ
                let arguments = try pop(for: "NEWOBJ")
                let type = try pop(for: "NEWOBJ")
                stack.append(Node(.newObject, [type, arguments]))
            case 0x62: // BUILD: the object stays the same object, now with state
                let state = try pop(for: "BUILD")
                try top(for: "BUILD").wrap(.build, adding: [state])
            case 0x51: // BINPERSID
                stack.append(Node(.persistentID, [try pop(for: "BINPERSID")]))

            default:
                throw fail("unsupported opcode 0x\(String(opcode, radix: 16, uppercase: true))\(Machine.opcodeNames[opcode].map { " (\($0))" } ?? "")")
            }
        }
    }

    mutating func top(for what: String) throws -> Node {
        guard let top = stack.last, stack.count > (marks.last ?? 0) else { throw fail("\(what) needs an object on the stack") }
        return top
    }

    mutating func pushLong(_ count: Int) throws {
        let raw = Array(try take(count, for: "LONG"))
        if raw.count <= 8 {
            var value: UInt64 = 0
            for (i, byte) in raw.enumerated() { value |= UInt64(byte) << (8 * UInt64(i)) }
            if let last = raw.last, last & 0x80 != 0, raw.count < 8 {
                value |= ~UInt64(0) << (8 * UInt64(raw.count)) // sign-extend
            }
            push(.int(Int(Int64(bitPattern: value))))
        } else {
            push(.bigInt(raw))
        }
    }

    /// Names of opcodes this reader refuses, so the error says what was found.
    static let opcodeNames: [UInt8: String] = [
        0x46: "FLOAT", 0x4C: "LONG", 0x53: "STRING", 0x56: "UNICODE", 0x50: "PERSID", 0x69: "INST",
        0x6F: "OBJ", 0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4", 0x8F: "EMPTY_SET", 0x90: "ADDITEMS",
        0x91: "FROZENSET", 0x92: "NEWOBJ_EX", 0x97: "NEXT_BUFFER", 0x98: "READONLY_BUFFER",
    ]
}

extension PickleValue {
    /// The text of a `str`, or of `bytes` holding UTF-8 (Python 2 pickles store str as bytes).
    public var stringValue: String? {
        switch self {
        case .string(let text): return text
        case .bytes(let raw): return String(bytes: raw, encoding: .utf8)
        default: return nil
        }
    }

    /// The bytes of `bytes`, including the protocol-2 forms `_codecs.encode(text, "latin1")` and
    /// `bytes()`.
    public var bytesValue: [UInt8]? {
        switch self {
        case .bytes(let raw): return raw
        case .reduce(.global(PickleGlobal("_codecs", "encode")), .tuple(let arguments)):
            guard arguments.count == 2, case .string(let text) = arguments[0],
                  arguments[1].stringValue == "latin1" || arguments[1].stringValue == "latin-1" else { return nil }
            var raw: [UInt8] = []
            raw.reserveCapacity(text.utf8.count)
            for scalar in text.unicodeScalars {
                guard scalar.value < 256 else { return nil }
                raw.append(UInt8(scalar.value))
            }
            return raw
        case .reduce(.global(PickleGlobal("builtins", "bytes")), .tuple([])):
            return []
        default: return nil
        }
    }

    public var intValue: Int? {
        switch self {
        case .int(let value): return value
        case .bool(let flag): return flag ? 1 : 0
        default: return nil
        }
    }

    /// Elements of a list or tuple.
    public var elements: [PickleValue]? {
        switch self {
        case .list(let items), .tuple(let items): return items
        case .appends(.list(let head), let tail): return head + tail
        default: return nil
        }
    }

    /// Entries of a dict, or of an `OrderedDict`/`defaultdict`-like object made by REDUCE and
    /// filled by SETITEMS (with its BUILD state, e.g. torch's `_metadata`, ignored).
    public var dictEntries: [Entry]? {
        switch self {
        case .dict(let entries): return entries
        case .setItems(let object, let entries):
            guard let head = object.dictEntries else { return nil }
            return head + entries
        case .build(let object, _): return object.dictEntries
        case .reduce(.global(let type), .tuple([])), .newObject(.global(let type), .tuple([])):
            let dictTypes: Set<PickleGlobal> = [PickleGlobal("collections", "OrderedDict"), PickleGlobal("builtins", "dict")]
            return dictTypes.contains(type) ? [] : nil
        default: return nil
        }
    }

    /// Looks up a dict entry by `str` or UTF-8 `bytes` key.
    public subscript(key: String) -> PickleValue? {
        dictEntries?.first { $0.key.stringValue == key }?.value
    }
}
