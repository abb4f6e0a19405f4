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
    # Readline replaces only the part of our word after its last break
    # character ('=' or ':', from COMP_WORDBREAKS): drop what comes before
    # it from each candidate. (Not COMP_WORDS[COMP_CWORD]: right after a
    # '=' that is "=" itself, while readline replaces the empty text after
    # it, and `vm=<TAB>` would become `vm==`.)
    local strip=0 i
    for (( i = ${#full} - 1; i >= 0; i-- )); do
        if [[ $COMP_WORDBREAKS == *"${full:i:1}"* ]]; then
            strip=$(( i + 1 ))
            break
        fi
    done
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
