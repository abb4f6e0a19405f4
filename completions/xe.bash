# bash completion for xe (pool-ha). Install with one line:
#   echo 'source <(xe --completions bash)' >> ~/.bashrc
# Candidates come from `xe __complete WORD...`: command names, parameter
# names and live values (vm=, host=, uuid=, ...) from the pool.

_xe() {
    # Re-split the line on blanks only: bash splits words at '=' and ':'
    # (COMP_WORDBREAKS), xe's words are key=value and map:key=value.
    local line=${COMP_LINE:0:COMP_POINT}
    local -a words
    read -r -a words <<<"$line"
    [[ $line == *[[:blank:]] ]] && words+=("")
    local full=${words[${#words[@]}-1]}
    # bash replaces only its own current word, the part of ours after the
    # last '=' or ':': drop what comes before it from each candidate.
    local cur=${COMP_WORDS[COMP_CWORD]}
    local strip=$(( ${#full} - ${#cur} ))
    (( strip < 0 )) && strip=0
    local IFS=$'\n' word
    COMPREPLY=()
    while IFS=$'\t' read -r word _; do
        [[ -z $word ]] && continue
        if [[ $word == *[=:] ]]; then
            COMPREPLY+=("${word:strip}")
        else
            COMPREPLY+=("${word:strip} ")
        fi
    done < <(xe __complete "${words[@]:1}" 2>/dev/null)
}

complete -o nospace -F _xe xe
