# gnuplot plots.gp (in this directory) draws the report's plots.
set terminal svg size 800,500 dynamic font 'sans,12'
set grid
set key left top
set output 'dispatch_a1.svg'
set title 'Dispatch cost, A = 1 active of N'
set xlabel 'N (socketpairs watched)'
set ylabel 'µs per event'
set logscale xy
plot for [i=2:10] 'dispatch_a1.dat' using 1:i with linespoints title columnhead(i)
set output 'dispatch_a100.svg'
set title 'Dispatch cost, A = 100 active of N'
set xlabel 'N (socketpairs watched)'
set ylabel 'µs per event'
set logscale xy
plot for [i=2:10] 'dispatch_a100.dat' using 1:i with linespoints title columnhead(i)
set output 'echo_idle.svg'
set title 'Echoes/s with K idle connections, C = 50 active, 512 B'
set xlabel 'K (idle connections)'
set ylabel 'echoes/s'
unset logscale
set logscale y
set key outside right
plot for [i=2:20] 'echo_idle.dat' using 1:i with linespoints title columnhead(i)
