#!/bin/sh
# An example trial for the fleet's local executor: the image has sh and
# nothing else, so it scores with shell arithmetic. Real trials bring their
# own image or run as Kubernetes Jobs (`executor: kubernetes`).
echo "node $FLOTILLA_NODE trial $FLOTILLA_TRIAL_ID" >&2
echo "RESULT=$ARQON_x"
