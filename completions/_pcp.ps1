
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'pcp' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'pcp'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'pcp' {
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print nothing on standard error but errors (before or after the subcommand)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print nothing on standard error but errors (before or after the subcommand)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on standard error: -v for pcp''s own, -vv for all of pcp''s, -vvv for the network stack''s too (before or after the subcommand)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on standard error: -v for pcp''s own, -vv for all of pcp''s, -vvv for the network stack''s too (before or after the subcommand)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print one JSON object per event on standard error: send and receive only (before or after the subcommand)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('send', 'send', [CompletionResultType]::ParameterValue, 'Send a stream, a file or a directory')
            [CompletionResult]::new('receive', 'receive', [CompletionResultType]::ParameterValue, 'Receive what a sender offers, given its code')
            [CompletionResult]::new('node', 'node', [CompletionResultType]::ParameterValue, 'Run a long-lived DHT, relay and AutoNAT node for a group''s own infrastructure')
            [CompletionResult]::new('clean', 'clean', [CompletionResultType]::ParameterValue, 'List and remove what interrupted receives left in a directory')
            break
        }
        'pcp;send' {
            [CompletionResult]::new('--text', '--text', [CompletionResultType]::ParameterName, 'Send TEXT as text: the receiver sees it on its terminal instead of saving a file, without a question up to 4 KiB. Without TEXT, the text is read from standard input, up to 1 MiB of UTF-8')
            [CompletionResult]::new('--code', '--code', [CompletionResultType]::ParameterName, 'Use this code instead of making one up (word-word-word-word)')
            [CompletionResult]::new('--words', '--words', [CompletionResultType]::ParameterName, 'How many words a new code has (at least 3; more words, more security)')
            [CompletionResult]::new('--level', '--level', [CompletionResultType]::ParameterName, 'zstd level for every chunk (1 fastest … 19 smallest); by default it adapts')
            [CompletionResult]::new('--reconnect-timeout', '--reconnect-timeout', [CompletionResultType]::ParameterName, 'After a lost connection, how long to wait for the receiver to come back before giving up (seconds)')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up when no receiver has come within DURATION (90, 90s, 10m, 1h): exit 5')
            [CompletionResult]::new('--many', '--many', [CompletionResultType]::ParameterName, 'Serve the same code to many receivers: until N of them have finished, or without N until Ctrl-C')
            [CompletionResult]::new('--many-lag', '--many-lag', [CompletionResultType]::ParameterName, 'With --many and standard input or text: drop a receiver that keeps the others waiting for SECS seconds')
            [CompletionResult]::new('--listen', '--listen', [CompletionResultType]::ParameterName, 'Listen on this address instead of all interfaces on a random port (repeatable)')
            [CompletionResult]::new('--bootstrap', '--bootstrap', [CompletionResultType]::ParameterName, 'Join the DHT through this node instead of the public IPFS bootstrap nodes (repeatable; PCP_BOOTSTRAP takes a comma-separated list)')
            [CompletionResult]::new('--no-compress', '--no-compress', [CompletionResultType]::ParameterName, 'Do not compress: for data known not to compress, or a very fast link')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print nothing on standard error but errors, and the code when pcp made it up')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print nothing on standard error but errors, and the code when pcp made it up')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on standard error: -v for pcp''s own, -vv for all of pcp''s, -vvv for the network stack''s too')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on standard error: -v for pcp''s own, -vv for all of pcp''s, -vvv for the network stack''s too')
            [CompletionResult]::new('--no-mdns', '--no-mdns', [CompletionResultType]::ParameterName, 'Do not look for peers on the local network (mDNS)')
            [CompletionResult]::new('--no-dht', '--no-dht', [CompletionResultType]::ParameterName, 'Do not use the DHT: find the peer on the local network or at --peer only')
            [CompletionResult]::new('--allow-relay', '--allow-relay', [CompletionResultType]::ParameterName, 'Let the data go through a relay when no direct connection can be made')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print one JSON object per event on standard error (phases, peers found, the offer, progress every second, the totals), terminal or not')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'pcp;receive' {
            [CompletionResult]::new('--code', '--code', [CompletionResultType]::ParameterName, 'The code, from a flag or the environment instead of the command line')
            [CompletionResult]::new('--peer', '--peer', [CompletionResultType]::ParameterName, 'Dial the sender at this address instead of (or as well as) searching for it')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Write what is received to FILE (a directory''s tar stream, too), through FILE.pcp-part, renamed into place only once everything verified; `-` is standard output')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Write what is received to FILE (a directory''s tar stream, too), through FILE.pcp-part, renamed into place only once everything verified; `-` is standard output')
            [CompletionResult]::new('-C', '-C ', [CompletionResultType]::ParameterName, 'Save or extract into DIR instead of the current directory. DIR must exist: pcp does not create it')
            [CompletionResult]::new('--directory', '--directory', [CompletionResultType]::ParameterName, 'Save or extract into DIR instead of the current directory. DIR must exist: pcp does not create it')
            [CompletionResult]::new('--reconnect-timeout', '--reconnect-timeout', [CompletionResultType]::ParameterName, 'After a lost connection, how long to look for the sender again before giving up (seconds). What arrived stays in the .pcp-part file (unless it went to standard output), and a later run resumes from it')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up when the sender has not been found within DURATION (90, 90s, 10m, 1h): exit 5')
            [CompletionResult]::new('--listen', '--listen', [CompletionResultType]::ParameterName, 'Listen on this address instead of all interfaces on a random port (repeatable)')
            [CompletionResult]::new('--bootstrap', '--bootstrap', [CompletionResultType]::ParameterName, 'Join the DHT through this node instead of the public IPFS bootstrap nodes (repeatable; PCP_BOOTSTRAP takes a comma-separated list)')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Accept the offer without asking')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Accept the offer without asking')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Overwrite existing files')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print nothing on standard error but errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print nothing on standard error but errors')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on standard error: -v for pcp''s own, -vv for all of pcp''s, -vvv for the network stack''s too')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on standard error: -v for pcp''s own, -vv for all of pcp''s, -vvv for the network stack''s too')
            [CompletionResult]::new('--no-mdns', '--no-mdns', [CompletionResultType]::ParameterName, 'Do not look for peers on the local network (mDNS)')
            [CompletionResult]::new('--no-dht', '--no-dht', [CompletionResultType]::ParameterName, 'Do not use the DHT: find the peer on the local network or at --peer only')
            [CompletionResult]::new('--allow-relay', '--allow-relay', [CompletionResultType]::ParameterName, 'Let the data go through a relay when no direct connection can be made')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print one JSON object per event on standard error (phases, peers found, the offer, progress every second, the totals), terminal or not')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'pcp;node' {
            [CompletionResult]::new('--listen', '--listen', [CompletionResultType]::ParameterName, 'Listen on this address (repeatable); the default is TCP and QUIC port 4001 on all IPv4 interfaces')
            [CompletionResult]::new('--bootstrap', '--bootstrap', [CompletionResultType]::ParameterName, 'Join other nodes into one DHT (repeatable; PCP_BOOTSTRAP takes a comma-separated list). Without it the node stands alone: others join it')
            [CompletionResult]::new('--key', '--key', [CompletionResultType]::ParameterName, 'Keep the node''s identity (an ed25519 key) in FILE, so its /p2p/ id stays the same across restarts; created, with mode 0600, when missing')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print nothing on standard error but errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print nothing on standard error but errors')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on standard error: -v for pcp''s own, -vv for all of pcp''s, -vvv for the network stack''s too')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on standard error: -v for pcp''s own, -vv for all of pcp''s, -vvv for the network stack''s too')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'pcp;clean' {
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Remove without asking')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Remove without asking')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
