import ArgumentParser
import Glibc
import SDFormat
import SDPipeline

struct PocketSD: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pocketsd",
        abstract: "Stable Diffusion on small boards: convert weights once, generate images offline.",
        discussion: """
            Exit status: 0 on success; 2 for a usage error (an unknown flag, a missing or \
            invalid value: every flag's value is checked before any work starts); 1 for a \
            failure at run time (a missing, damaged or unwritable file, a full disk, a model \
            file truncated while in use); 130 when interrupted by SIGINT (Ctrl-C) and 143 by \
            SIGTERM, leaving no partial output behind. Outputs are checked before any work \
            starts, and one that would replace an input of the run is refused.
            """,
        version: "0.1.0",
        subcommands: [GenerateCommand.self, ServeCommand.self, ConvertCommand.self, InfoCommand.self, VerifyCommand.self, TokenizeCommand.self, BenchCommand.self])
}

/// Usage errors exit with 2, failures at run time with 1; each prints one line.
@main
enum Main {
    static func main() {
        ProcessSignals.install()
        var command: ParsableCommand
        do {
            command = try PocketSD.parseAsRoot(Self.joiningNegativeValues(Array(CommandLine.arguments.dropFirst())))
        } catch {
            let code = PocketSD.exitCode(for: error)
            if code == .success {
                print(PocketSD.fullMessage(for: error))
                exit(0)
            }
            Terminal.error(PocketSD.message(for: error))
            exit(2)
        }
        do {
            try command.run()
        } catch let exit as ExitCode {
            Glibc.exit(exit.rawValue)
        } catch where PocketSD.exitCode(for: error) == .success {
            // `--help` on a subcommand arrives as a help command whose run() throws.
            print(PocketSD.fullMessage(for: error))
            exit(0)
        } catch let error as PipelineError {
            Terminal.error("\(error)")
            // A request the pipeline refuses is an invalid flag value the CLI did not catch.
            if case .invalidRequest = error { exit(2) }
            exit(1)
        } catch {
            Terminal.error("\(error)")
            exit(1)
        }
    }

    /// `--width -8` as `--width=-8`: the argument parser takes a word starting with "-"
    /// for a flag and would report a missing value instead of checking the number. Only
    /// options that take a number are joined, so a flag followed by a prompt such as "-5"
    /// is left alone.
    static func joiningNegativeValues(_ arguments: [String]) -> [String] {
        var result: [String] = []
        var i = 0
        while i < arguments.count {
            let a = arguments[i]
            if a == "--" { result += arguments[i...]; break }
            if numericOptions.contains(a), i + 1 < arguments.count,
               arguments[i + 1].hasPrefix("-"), Double(arguments[i + 1]) != nil {
                result.append(a + "=" + arguments[i + 1])
                i += 2
                continue
            }
            result.append(a)
            i += 1
        }
        return result
    }

    static let numericOptions: Set<String> = [
        "--width", "--height", "--steps", "--guidance", "--cfg-scale", "--guidance-rescale", "--seed", "--images",
        "--threads", "--vae-tile", "--strength", "--port", "--queue",
    ]
}
