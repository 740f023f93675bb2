<?php
// Translations of the plugin: fanout-<locale>.mo for PHP, fanout-<locale>-fanout-wp.json for its scripts.
