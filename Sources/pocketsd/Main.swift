import ArgumentParser
import Glibc

struct PocketSD: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pocketsd",
        abstract: "Stable Diffusion on small boards: convert weights once, generate images offline.",
        version: "0.1.0",
        subcommands: [GenerateCommand.self, ConvertCommand.self, InfoCommand.self, VerifyCommand.self, TokenizeCommand.self, BenchCommand.self])
}

/// Usage errors exit with 2, failures at run time with 1; each prints one line.
@main
enum Main {
    static func main() {
        var command: ParsableCommand
        do {
            command = try PocketSD.parseAsRoot()
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
        } catch {
            Terminal.error("\(error)")
            exit(1)
        }
    }
}
