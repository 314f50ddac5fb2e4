import Foundation

/// How a child process ended and what it printed.
public struct ProcessOutput: Sendable {
    public var status: Int32
    public var out: Data
    public var err: Data
    public var outText: String { String(decoding: out, as: UTF8.self) }
    public var errText: String { String(decoding: err, as: UTF8.self) }
}

/// Runs `executable` with `arguments` and this process's environment plus `environment`, and waits
/// for it. Standard error is read beside standard output (neither pipe fills while the other is
/// read), or into it with `mergingErrors` (`err` then stays empty).
public func runProcess(_ executable: URL, _ arguments: [String], environment: [String: String] = [:],
                       mergingErrors: Bool = false) throws -> ProcessOutput {
    let p = Process()
    p.executableURL = executable
    p.arguments = arguments
    if !environment.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = mergingErrors ? out : err
    try p.run()
    nonisolated(unsafe) var errData = Data()
    let readingErrors = DispatchGroup()
    if !mergingErrors {
        DispatchQueue.global().async(group: readingErrors) { errData = err.fileHandleForReading.readDataToEndOfFile() }
    }
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    readingErrors.wait()
    p.waitUntilExit()
    return ProcessOutput(status: p.terminationStatus, out: outData, err: errData)
}
