# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_pcp_global_optspecs
    string join \n q/quiet v/verbose json h/help V/version
end

function __fish_pcp_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_pcp_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_pcp_using_subcommand
    set -l cmd (__fish_pcp_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c pcp -n "__fish_pcp_needs_command" -s q -l quiet -d 'Print nothing on standard error but errors (before or after the subcommand)'
complete -c pcp -n "__fish_pcp_needs_command" -s v -l verbose -d 'More logging on standard error: -v for pcp\'s own, -vv for all of pcp\'s, -vvv for the network stack\'s too (before or after the subcommand)'
complete -c pcp -n "__fish_pcp_needs_command" -l json -d 'Print one JSON object per event on standard error: send and receive only (before or after the subcommand)'
complete -c pcp -n "__fish_pcp_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pcp -n "__fish_pcp_needs_command" -s V -l version -d 'Print version'
complete -c pcp -n "__fish_pcp_needs_command" -f -a "send" -d 'Send a stream, a file or a directory'
complete -c pcp -n "__fish_pcp_needs_command" -f -a "receive" -d 'Receive what a sender offers, given its code'
complete -c pcp -n "__fish_pcp_needs_command" -f -a "node" -d 'Run a long-lived DHT, relay and AutoNAT node for a group\'s own infrastructure'
complete -c pcp -n "__fish_pcp_needs_command" -f -a "clean" -d 'List and remove what interrupted receives left in a directory'
complete -c pcp -n "__fish_pcp_using_subcommand send" -l text -d 'Send TEXT as text: the receiver sees it on its terminal instead of saving a file, without a question up to 4 KiB. Without TEXT, the text is read from standard input, up to 1 MiB of UTF-8' -r
complete -c pcp -n "__fish_pcp_using_subcommand send" -l code -d 'Use this code instead of making one up (word-word-word-word)' -r
complete -c pcp -n "__fish_pcp_using_subcommand send" -l words -d 'How many words a new code has (at least 3; more words, more security)' -r
complete -c pcp -n "__fish_pcp_using_subcommand send" -l level -d 'zstd level for every chunk (1 fastest … 19 smallest); by default it adapts' -r
complete -c pcp -n "__fish_pcp_using_subcommand send" -l reconnect-timeout -d 'After a lost connection, how long to wait for the receiver to come back before giving up (seconds)' -r
complete -c pcp -n "__fish_pcp_using_subcommand send" -l timeout -d 'Give up when no receiver has come within DURATION (90, 90s, 10m, 1h): exit 5' -r
complete -c pcp -n "__fish_pcp_using_subcommand send" -l many -d 'Serve the same code to many receivers: until N of them have finished, or without N until Ctrl-C' -r -F
complete -c pcp -n "__fish_pcp_using_subcommand send" -l many-lag -d 'With --many and standard input or text: drop a receiver that keeps the others waiting for SECS seconds' -r
complete -c pcp -n "__fish_pcp_using_subcommand send" -l listen -d 'Listen on this address instead of all interfaces on a random port (repeatable)' -r
complete -c pcp -n "__fish_pcp_using_subcommand send" -l bootstrap -d 'Join the DHT through this node instead of the public IPFS bootstrap nodes (repeatable; PCP_BOOTSTRAP takes a comma-separated list)' -r
complete -c pcp -n "__fish_pcp_using_subcommand send" -l no-compress -d 'Do not compress: for data known not to compress, or a very fast link'
complete -c pcp -n "__fish_pcp_using_subcommand send" -s q -l quiet -d 'Print nothing on standard error but errors, and the code when pcp made it up'
complete -c pcp -n "__fish_pcp_using_subcommand send" -s v -l verbose -d 'More logging on standard error: -v for pcp\'s own, -vv for all of pcp\'s, -vvv for the network stack\'s too'
complete -c pcp -n "__fish_pcp_using_subcommand send" -l no-mdns -d 'Do not look for peers on the local network (mDNS)'
complete -c pcp -n "__fish_pcp_using_subcommand send" -l no-dht -d 'Do not use the DHT: find the peer on the local network or at --peer only'
complete -c pcp -n "__fish_pcp_using_subcommand send" -l allow-relay -d 'Let the data go through a relay when no direct connection can be made'
complete -c pcp -n "__fish_pcp_using_subcommand send" -l json -d 'Print one JSON object per event on standard error (phases, peers found, the offer, progress every second, the totals), terminal or not'
complete -c pcp -n "__fish_pcp_using_subcommand send" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pcp -n "__fish_pcp_using_subcommand send" -s V -l version -d 'Print version'
complete -c pcp -n "__fish_pcp_using_subcommand receive" -l code -d 'The code, from a flag or the environment instead of the command line' -r
complete -c pcp -n "__fish_pcp_using_subcommand receive" -l peer -d 'Dial the sender at this address instead of (or as well as) searching for it' -r
complete -c pcp -n "__fish_pcp_using_subcommand receive" -s o -l output -d 'Write what is received to FILE (a directory\'s tar stream, too), through FILE.pcp-part, renamed into place only once everything verified; `-` is standard output' -r -F
complete -c pcp -n "__fish_pcp_using_subcommand receive" -s C -l directory -d 'Save or extract into DIR instead of the current directory. DIR must exist: pcp does not create it' -r -f -a "(__fish_complete_directories)"
complete -c pcp -n "__fish_pcp_using_subcommand receive" -l reconnect-timeout -d 'After a lost connection, how long to look for the sender again before giving up (seconds). What arrived stays in the .pcp-part file (unless it went to standard output), and a later run resumes from it' -r
complete -c pcp -n "__fish_pcp_using_subcommand receive" -l timeout -d 'Give up when the sender has not been found within DURATION (90, 90s, 10m, 1h): exit 5' -r
complete -c pcp -n "__fish_pcp_using_subcommand receive" -l listen -d 'Listen on this address instead of all interfaces on a random port (repeatable)' -r
complete -c pcp -n "__fish_pcp_using_subcommand receive" -l bootstrap -d 'Join the DHT through this node instead of the public IPFS bootstrap nodes (repeatable; PCP_BOOTSTRAP takes a comma-separated list)' -r
complete -c pcp -n "__fish_pcp_using_subcommand receive" -s y -l yes -d 'Accept the offer without asking'
complete -c pcp -n "__fish_pcp_using_subcommand receive" -l force -d 'Overwrite existing files'
complete -c pcp -n "__fish_pcp_using_subcommand receive" -s q -l quiet -d 'Print nothing on standard error but errors'
complete -c pcp -n "__fish_pcp_using_subcommand receive" -s v -l verbose -d 'More logging on standard error: -v for pcp\'s own, -vv for all of pcp\'s, -vvv for the network stack\'s too'
complete -c pcp -n "__fish_pcp_using_subcommand receive" -l no-mdns -d 'Do not look for peers on the local network (mDNS)'
complete -c pcp -n "__fish_pcp_using_subcommand receive" -l no-dht -d 'Do not use the DHT: find the peer on the local network or at --peer only'
complete -c pcp -n "__fish_pcp_using_subcommand receive" -l allow-relay -d 'Let the data go through a relay when no direct connection can be made'
complete -c pcp -n "__fish_pcp_using_subcommand receive" -l json -d 'Print one JSON object per event on standard error (phases, peers found, the offer, progress every second, the totals), terminal or not'
complete -c pcp -n "__fish_pcp_using_subcommand receive" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pcp -n "__fish_pcp_using_subcommand receive" -s V -l version -d 'Print version'
complete -c pcp -n "__fish_pcp_using_subcommand node" -l listen -d 'Listen on this address (repeatable); the default is TCP and QUIC port 4001 on all IPv4 interfaces' -r
complete -c pcp -n "__fish_pcp_using_subcommand node" -l bootstrap -d 'Join other nodes into one DHT (repeatable; PCP_BOOTSTRAP takes a comma-separated list). Without it the node stands alone: others join it' -r
complete -c pcp -n "__fish_pcp_using_subcommand node" -l key -d 'Keep the node\'s identity (an ed25519 key) in FILE, so its /p2p/ id stays the same across restarts; created, with mode 0600, when missing' -r -F
complete -c pcp -n "__fish_pcp_using_subcommand node" -s q -l quiet -d 'Print nothing on standard error but errors'
complete -c pcp -n "__fish_pcp_using_subcommand node" -s v -l verbose -d 'More logging on standard error: -v for pcp\'s own, -vv for all of pcp\'s, -vvv for the network stack\'s too'
complete -c pcp -n "__fish_pcp_using_subcommand node" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pcp -n "__fish_pcp_using_subcommand node" -s V -l version -d 'Print version'
complete -c pcp -n "__fish_pcp_using_subcommand clean" -s y -l yes -d 'Remove without asking'
complete -c pcp -n "__fish_pcp_using_subcommand clean" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pcp -n "__fish_pcp_using_subcommand clean" -s V -l version -d 'Print version'
