
use builtin;
use str;

set edit:completion:arg-completer[pcp] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'pcp'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'pcp'= {
            cand -q 'Print nothing on standard error but errors (before or after the subcommand)'
            cand --quiet 'Print nothing on standard error but errors (before or after the subcommand)'
            cand -v 'More logging on standard error: -v for pcp''s own, -vv for all of pcp''s, -vvv for the network stack''s too (before or after the subcommand)'
            cand --verbose 'More logging on standard error: -v for pcp''s own, -vv for all of pcp''s, -vvv for the network stack''s too (before or after the subcommand)'
            cand --json 'Print one JSON object per event on standard error: send and receive only (before or after the subcommand)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand send 'Send a stream, a file or a directory'
            cand receive 'Receive what a sender offers, given its code'
            cand node 'Run a long-lived DHT, relay and AutoNAT node for a group''s own infrastructure'
            cand clean 'List and remove what interrupted receives left in a directory'
        }
        &'pcp;send'= {
            cand --text 'Send TEXT as text: the receiver sees it on its terminal instead of saving a file, without a question up to 4 KiB. Without TEXT, the text is read from standard input, up to 1 MiB of UTF-8'
            cand --code 'Use this code instead of making one up (word-word-word-word)'
            cand --words 'How many words a new code has (at least 3; more words, more security)'
            cand --level 'zstd level for every chunk (1 fastest … 19 smallest); by default it adapts'
            cand --reconnect-timeout 'After a lost connection, how long to wait for the receiver to come back before giving up (seconds)'
            cand --timeout 'Give up when no receiver has come within DURATION (90, 90s, 10m, 1h): exit 5'
            cand --many 'Serve the same code to many receivers: until N of them have finished, or without N until Ctrl-C'
            cand --many-lag 'With --many and standard input or text: drop a receiver that keeps the others waiting for SECS seconds'
            cand --listen 'Listen on this address instead of all interfaces on a random port (repeatable)'
            cand --bootstrap 'Join the DHT through this node instead of the public IPFS bootstrap nodes (repeatable; PCP_BOOTSTRAP takes a comma-separated list)'
            cand --no-compress 'Do not compress: for data known not to compress, or a very fast link'
            cand -q 'Print nothing on standard error but errors, and the code when pcp made it up'
            cand --quiet 'Print nothing on standard error but errors, and the code when pcp made it up'
            cand -v 'More logging on standard error: -v for pcp''s own, -vv for all of pcp''s, -vvv for the network stack''s too'
            cand --verbose 'More logging on standard error: -v for pcp''s own, -vv for all of pcp''s, -vvv for the network stack''s too'
            cand --no-mdns 'Do not look for peers on the local network (mDNS)'
            cand --no-dht 'Do not use the DHT: find the peer on the local network or at --peer only'
            cand --allow-relay 'Let the data go through a relay when no direct connection can be made'
            cand --json 'Print one JSON object per event on standard error (phases, peers found, the offer, progress every second, the totals), terminal or not'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'pcp;receive'= {
            cand --code 'The code, from a flag or the environment instead of the command line'
            cand --peer 'Dial the sender at this address instead of (or as well as) searching for it'
            cand -o 'Write what is received to FILE (a directory''s tar stream, too), through FILE.pcp-part, renamed into place only once everything verified; `-` is standard output'
            cand --output 'Write what is received to FILE (a directory''s tar stream, too), through FILE.pcp-part, renamed into place only once everything verified; `-` is standard output'
            cand -C 'Save or extract into DIR instead of the current directory. DIR must exist: pcp does not create it'
            cand --directory 'Save or extract into DIR instead of the current directory. DIR must exist: pcp does not create it'
            cand --reconnect-timeout 'After a lost connection, how long to look for the sender again before giving up (seconds). What arrived stays in the .pcp-part file (unless it went to standard output), and a later run resumes from it'
            cand --timeout 'Give up when the sender has not been found within DURATION (90, 90s, 10m, 1h): exit 5'
            cand --listen 'Listen on this address instead of all interfaces on a random port (repeatable)'
            cand --bootstrap 'Join the DHT through this node instead of the public IPFS bootstrap nodes (repeatable; PCP_BOOTSTRAP takes a comma-separated list)'
            cand -y 'Accept the offer without asking'
            cand --yes 'Accept the offer without asking'
            cand --force 'Overwrite existing files'
            cand -q 'Print nothing on standard error but errors'
            cand --quiet 'Print nothing on standard error but errors'
            cand -v 'More logging on standard error: -v for pcp''s own, -vv for all of pcp''s, -vvv for the network stack''s too'
            cand --verbose 'More logging on standard error: -v for pcp''s own, -vv for all of pcp''s, -vvv for the network stack''s too'
            cand --no-mdns 'Do not look for peers on the local network (mDNS)'
            cand --no-dht 'Do not use the DHT: find the peer on the local network or at --peer only'
            cand --allow-relay 'Let the data go through a relay when no direct connection can be made'
            cand --json 'Print one JSON object per event on standard error (phases, peers found, the offer, progress every second, the totals), terminal or not'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'pcp;node'= {
            cand --listen 'Listen on this address (repeatable); the default is TCP and QUIC port 4001 on all IPv4 interfaces'
            cand --bootstrap 'Join other nodes into one DHT (repeatable; PCP_BOOTSTRAP takes a comma-separated list). Without it the node stands alone: others join it'
            cand --key 'Keep the node''s identity (an ed25519 key) in FILE, so its /p2p/ id stays the same across restarts; created, with mode 0600, when missing'
            cand -q 'Print nothing on standard error but errors'
            cand --quiet 'Print nothing on standard error but errors'
            cand -v 'More logging on standard error: -v for pcp''s own, -vv for all of pcp''s, -vvv for the network stack''s too'
            cand --verbose 'More logging on standard error: -v for pcp''s own, -vv for all of pcp''s, -vvv for the network stack''s too'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'pcp;clean'= {
            cand -y 'Remove without asking'
            cand --yes 'Remove without asking'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
    ]
    $completions[$command]
}
