
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
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand send 'Send a stream, a file or a directory'
            cand receive 'Receive what a sender offers, given its code'
        }
        &'pcp;send'= {
            cand --code 'Use this code instead of making one up (word-word-word-word)'
            cand --words 'How many words a new code has (at least 3; more words, more security)'
            cand --level 'zstd compression level (1 fastest … 19 smallest)'
            cand --chunk-size 'Chunk size in bytes (a power of two from 64 KiB to 8 MiB)'
            cand --reconnect-timeout 'After a lost connection, how long to look for the peer again before giving up (seconds). With -o the part file is kept, and a later run resumes from it'
            cand --listen 'Listen on this address instead of all interfaces on a random port (repeatable)'
            cand --no-compress 'Do not compress: for data known not to compress, or a very fast link'
            cand -q 'Print nothing on standard error but errors (and the code, when pcp made it up)'
            cand --quiet 'Print nothing on standard error but errors (and the code, when pcp made it up)'
            cand -v 'More logging on standard error: -v for pcp''s own, -vv for the network stack too'
            cand --verbose 'More logging on standard error: -v for pcp''s own, -vv for the network stack too'
            cand --no-mdns 'Do not look for peers on the local network (mDNS)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'pcp;receive'= {
            cand --code 'The code, from a flag or the environment instead of the command line'
            cand --peer 'Dial the sender at this address instead of (or as well as) searching for it'
            cand -o 'Write what is received to FILE (a directory''s tar stream, too), through FILE.pcp-part, renamed into place only once everything verified'
            cand --output 'Write what is received to FILE (a directory''s tar stream, too), through FILE.pcp-part, renamed into place only once everything verified'
            cand -C 'Save or extract into DIR instead of the current directory'
            cand --directory 'Save or extract into DIR instead of the current directory'
            cand --reconnect-timeout 'After a lost connection, how long to look for the peer again before giving up (seconds). With -o the part file is kept, and a later run resumes from it'
            cand --listen 'Listen on this address instead of all interfaces on a random port (repeatable)'
            cand -y 'Accept the offer without asking'
            cand --yes 'Accept the offer without asking'
            cand --force 'Overwrite existing files'
            cand -q 'Print nothing on standard error but errors (and the code, when pcp made it up)'
            cand --quiet 'Print nothing on standard error but errors (and the code, when pcp made it up)'
            cand -v 'More logging on standard error: -v for pcp''s own, -vv for the network stack too'
            cand --verbose 'More logging on standard error: -v for pcp''s own, -vv for the network stack too'
            cand --no-mdns 'Do not look for peers on the local network (mDNS)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
    ]
    $completions[$command]
}
