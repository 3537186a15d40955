#!/usr/bin/env bash
# Drives `eosin chat` in a real terminal through tmux, as a person would: a question, Ctrl-C at
# the prompt (clears the line), up-arrow history recall, tab completion of :commands and of a
# path with spaces, Ctrl-D.
# Usage: Scripts/tmux-chat-test.sh EOSIN_BINARY WEIGHTS SLIDE WORKDIR. Exit 0 on success.
set -u
bin=$1 weights=$2 slide=$3 dir=$4
sock=eosin-test-$$
t() { tmux -L "$sock" "$@"; }
screen() { t capture-pane -p -t chat; }
wait_for() {  # wait_for TEXT SECONDS
  for _ in $(seq 1 $(( $2 * 5 ))); do screen | grep -qF -- "$1" && return 0; sleep 0.2; done
  echo "FAIL: did not see '$1'"; screen; t kill-server; exit 1
}
trap 't kill-server 2>/dev/null' EXIT
t new-session -d -s chat -x 150 -y 40 "XDG_STATE_HOME=$dir/state EOSIN_LM=none $bin chat --weights $weights --cache $dir/cache --max-tokens 30 --stream-delay-ms 150 $slide; sleep 5"
wait_for "eosin[" 120
t send-keys -t chat "What is the diagnosis?" Enter
wait_for "evidence 4 tiles" 60
# Ctrl-C during an answer cancels only that answer, then the prompt returns.
t send-keys -t chat "Describe the features." Enter
sleep 0.6
t send-keys -t chat C-c
wait_for "answer was cancelled" 20
t send-keys -t chat ":info" Enter
wait_for "vendor     generic-tiff" 20
t send-keys -t chat C-l
t send-keys -t chat "half typed" C-c
sleep 0.5
t send-keys -t chat ":info" Enter
wait_for "vendor     generic-tiff" 20
if screen | grep -qF "half typed:info"; then echo "FAIL: Ctrl-C did not clear the line"; exit 1; fi
t send-keys -t chat ":evi" Tab
wait_for "> :evidence" 10
t send-keys -t chat Enter
wait_for "tiles behind the last answer" 10
# Up-arrow recalls the last line onto the current prompt.
t send-keys -t chat Up
sleep 0.5
last=$(screen | grep -F "eosin[" | tail -1)
[ "$last" = "eosin[case.tiff]> :evidence" ] || { echo "FAIL: up-arrow gave '$last'"; screen; exit 1; }
t send-keys -t chat C-c
sleep 0.3
# Tab completes a path with spaces, quoting it; :open reads the quoted path back.
mkdir -p "$dir/comp dir" && cp "$slide" "$dir/comp dir/case copy.tiff"
t send-keys -t chat ":open $dir/comp" Tab
sleep 0.5
t send-keys -t chat Tab
sleep 0.5
t send-keys -t chat Enter
wait_for "opened case copy.tiff" 60
t send-keys -t chat C-d
for _ in $(seq 1 50); do [ -f "$dir/state/eosin/history" ] && break; sleep 0.2; done
[ -f "$dir/state/eosin/history" ] || { echo "FAIL: no history file after Ctrl-D"; exit 1; }
sleep 1
grep -qF ":evidence" "$dir/state/eosin/history" || { echo "FAIL: commands not in history"; cat "$dir/state/eosin/history"; exit 1; }
grep -qxF "What is the diagnosis?" "$dir/state/eosin/history" || { echo "FAIL: question not in history"; cat "$dir/state/eosin/history"; exit 1; }
echo "tmux chat test: OK"
