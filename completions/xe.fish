# fish completion for xe (pool-ha). Install with one line:
#   xe --completions fish > ~/.config/fish/completions/xe.fish
# Candidates come from `xe __complete WORD...`: command names, parameter
# names and live values (vm=, host=, uuid=, ...) from the pool.

function __xe_complete
    set -l words (commandline -opc)
    set -e words[1]
    xe __complete $words (commandline -ct) 2>/dev/null
end

complete -c xe -f -a '(__xe_complete)'
