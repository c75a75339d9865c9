#!/usr/bin/env bash
# tests/cited_tests.sh SOURCE_DIR BUILD_DIR: fails if a markdown file cites
# a test that ctest does not have, if tests/claims.md links to a heading
# that is not there, or if its counts table disagrees with its rows.
#
# The READMEs' faults tables and tests/claims.md say where each claim is
# proven: a ctest test name in backticks, "`... [05-epoll-lt/server]`", or a
# link to a section, "[06, Is ET faster?](../06-epoll-et/README.md#...)".
# A test renamed or a heading reworded would leave the citation pointing at
# nothing, silently. This check reads every *.md of the source tree (not
# build trees or fetched code), and compares:
#   - each backticked text that ends in " [label]" with `ctest -N`'s list;
#   - each relative link with a #anchor, in tests/claims.md, with the
#     headings of the file it names (GitHub's anchors: lower case, spaces
#     to '-', punctuation dropped).
# It runs as a ctest test, so it sees the tests this build has.
#
# usage: bash tests/cited_tests.sh SOURCE_DIR BUILD_DIR

set -uo pipefail

if [[ $# -ne 2 || ! -d $1 || ! -d $2 ]]; then
    echo "usage: bash tests/cited_tests.sh SOURCE_DIR BUILD_DIR" >&2
    exit 2
fi
source_dir=$1
build_dir=$2
ctest_command=${CTEST_COMMAND:-ctest}

# The tests this build has, one name a line ("  Test  #12: name").
known=$(mktemp)
labels=$(mktemp)
trap 'rm -f "$known" "$labels"' EXIT
if ! "$ctest_command" --test-dir "$build_dir" -N 2>/dev/null |
    sed -n 's/^ *Test *#[0-9]*: //p' >"$known" || [[ ! -s $known ]]; then
    echo "cited_tests: ctest -N listed no tests in $build_dir" >&2
    exit 1
fi

# The labels of those tests ("05-epoll-lt/server", "common", "arguments"):
# a backticked text is a test's name when it ends in one of them, or in a
# chapter's ("[NN-...]"), not in an errno name ("[EADDRINUSE]").
sed -n 's/.* \[\([^]]*\)\]$/\1/p' "$known" | sort -u >"$labels"
is_test_name() {
    local label=${1##* [}
    label=${label%]}
    [[ $label =~ ^[0-9][0-9]- ]] || grep -qxF -- "$label" "$labels"
}

mapfile -t documents < <(find "$source_dir" -name '*.md' -not -path '*/.git/*' -not -path '*/build*/*' \
    -not -path '*/_deps/*' | sort)

missing=0
cited=0
for document in "${documents[@]}"; do
    relative=${document#"$source_dir"/}
    # A name may be wrapped over two lines: join the lines, squeeze spaces.
    while IFS= read -r name; do
        is_test_name "$name" || continue
        cited=$((cited + 1))
        if ! grep -qxF -- "$name" "$known"; then
            echo "$relative: cites \`$name\`, which is not a ctest test here"
            missing=$((missing + 1))
        fi
    done < <(tr '\n' ' ' <"$document" | tr -s ' ' | grep -o '`[^`]* \[[A-Za-z0-9_./-]*\]`' | tr -d '`' | sort -u)
done

# GitHub's anchor for a heading: lower case; letters, digits, spaces, '-'
# and '_' kept (other bytes of UTF-8 text too), spaces to '-'.
anchors_of() {
    sed -n 's/^#\{1,6\} //p' "$1" | tr 'A-Z' 'a-z' |
        sed -e 's/[][!"#$%&'\''()*+,./:;<=>?@\\^`{|}~]//g' -e 's/—//g; s/–//g; s/’//g; s/“//g; s/”//g; s/×//g; s/≥//g; s/≤//g; s/→//g' \
            -e 's/ /-/g'
}

links=0
claims=$source_dir/tests/claims.md
if [[ -f $claims ]]; then
    while IFS= read -r link; do
        target=${link%%#*}
        anchor=${link#*#}
        links=$((links + 1))
        file=$source_dir/tests/$target
        if [[ ! -f $file ]]; then
            echo "tests/claims.md: links to $target, which does not exist"
            missing=$((missing + 1))
        elif ! anchors_of "$file" | grep -qxF -- "$anchor"; then
            echo "tests/claims.md: links to $target#$anchor, a heading $target does not have"
            missing=$((missing + 1))
        fi
    done < <(grep -o '](\.\{0,2\}[^)#: ]*#[^)]*)' "$claims" | sed 's/^](//; s/)$//' | sort -u)
fi

# The counts table of tests/claims.md agrees with its rows. Each claim
# counts once, in the first category that fits: wrong in the document (its
# cell starts "**wrong**"), shown by a test (a name in backticks), by the
# benchmark (a link into bench/results), in a README (any other link), or
# not yet shown.
if [[ -f $claims ]]; then
    counted=$(awk -F ' [|] ' '
        /^[|] [*][*][0-9][0-9][0-9]-[0-9]+[*][*]/ {
            where = $3
            all++
            if (where ~ /^[*][*]wrong[*][*]/) wrong++
            else if (where ~ /`[^`]* \[[^]`]*\]`/) test++
            else if (where ~ /\]\(bench\/results\//) bench++
            else if (where ~ /\]\(/) readme++
            else none++
        }
        END { printf "%d %d %d %d %d %d\n", all, test, readme, bench, wrong, none }' "$claims")
    stated=$(for row in "claims in all" "shown by a test" "shown only with real output in a README" \
        "shown by the benchmark" "wrong in the document, and corrected" "not yet shown"; do
        sed -n "s/^| $row | \([0-9]*\).*|$/\1/p" "$claims" | head -1
    done | tr '\n' ' ')
    if [[ "$counted " != "$stated" ]]; then
        echo "tests/claims.md: its counts table says $stated(all, test, README, bench, wrong, not yet shown); its rows give $counted"
        missing=$((missing + 1))
    fi
fi

if ((missing > 0)); then
    echo "cited_tests: $missing problem(s), above ($cited test names and $links section links checked)"
    exit 1
fi
echo "cited_tests: ${#documents[@]} markdown files cite $cited test names and tests/claims.md $links section links; all exist, and the index's counts agree with its rows"
